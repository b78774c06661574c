"""The mask-free ("grouped") attention of the MoVE ViT equals the masked path it replaces, in float64 on the CPU:
the final tokens and the gradients of every parameter and of both input images, for every mix of studies with and
without a lateral, in the ViT alone; and through the whole Med-ST loss (both compat modes) in float32, the
precision the heads and losses are written for (their last normalisation and the losses run in float32)."""

from __future__ import annotations

import copy

import pytest
import torch

from medst.model import MedST, ModelConfig
from medst.model.dummy import random_batch
from medst.model.vit import MoveViT

CFG = ModelConfig.preset("tiny", image_size=32, patch_size=8, width=32, depth=2, heads=4)


def _pair(config: ModelConfig = CFG) -> tuple[MoveViT, MoveViT]:
    torch.manual_seed(0)
    masked = MoveViT(config, attention="masked").double().train()
    grouped = copy.deepcopy(masked)
    grouped.attention = "grouped"
    return masked, grouped


def _run(vit: MoveViT, frontal: torch.Tensor, lateral: torch.Tensor, has: torch.Tensor, num: int | None):
    f, lat = frontal.clone().requires_grad_(), lateral.clone().requires_grad_()
    out = vit(f, lat, has, num)
    # A loss that weighs every output token differently, so that a permuted row or token cannot cancel out.
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in vit.named_parameters() if p.grad is not None}
    vit.zero_grad(set_to_none=True)
    assert f.grad is not None and lat.grad is not None
    return out.detach(), grads, f.grad, lat.grad


@pytest.mark.parametrize(
    "has_lateral",
    [
        [True, False, True, True, False, False, True],  # mixed, interleaved: the batch is reordered and back
        [False, True, False, False, True, True, False],
        [True] * 5,  # every lateral real: one unmasked call
        [False] * 4,  # none real: every row attends over its [CLS, frontal] keys only
        [False, True],
    ],
)
@pytest.mark.parametrize("pass_count", [True, False])
def test_grouped_attention_equals_masked_values_and_gradients(
    has_lateral: list[bool], pass_count: bool
) -> None:
    masked, grouped = _pair()
    n = len(has_lateral)
    g = torch.Generator().manual_seed(n)
    frontal = torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64)
    has = torch.tensor(has_lateral)
    lateral = torch.randn(n, 3, 32, 32, generator=g, dtype=torch.float64) * has[:, None, None, None]
    num = int(has.sum()) if pass_count else None
    out_m, grads_m, df_m, dl_m = _run(masked, frontal, lateral, has, num)
    out_g, grads_g, df_g, dl_g = _run(grouped, frontal, lateral, has, num)
    assert out_g.shape == (n, 1 + 2 * 16, 32)
    torch.testing.assert_close(out_g, out_m, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(df_g, df_m, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dl_g, dl_m, rtol=1e-10, atol=1e-12)
    assert grads_g.keys() == grads_m.keys() and len(grads_m) == len(list(masked.parameters()))
    for name in grads_m:
        torch.testing.assert_close(grads_g[name], grads_m[name], rtol=1e-10, atol=1e-12, msg=name)
    # The masked path is not trivially equal to "ignore the mask": attending to a missing lateral changes things.
    if any(has_lateral) is not all(has_lateral) or not any(has_lateral):
        unmasked = _run(grouped, frontal, lateral, torch.ones(n, dtype=torch.bool), n)[0]
        assert not torch.allclose(unmasked, out_m, atol=1e-6)


def test_grouped_attention_with_gradient_checkpointing_equals_masked() -> None:
    masked, grouped = _pair(CFG.model_copy(update={"grad_checkpointing": True}))
    has = torch.tensor([False, True, True, False])
    g = torch.Generator().manual_seed(3)
    frontal = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64)
    lateral = torch.randn(4, 3, 32, 32, generator=g, dtype=torch.float64) * has[:, None, None, None]
    out_m, grads_m, *_ = _run(masked, frontal, lateral, has, 2)
    out_g, grads_g, *_ = _run(grouped, frontal, lateral, has, 2)
    torch.testing.assert_close(out_g, out_m, rtol=1e-10, atol=1e-12)
    for name in grads_m:
        torch.testing.assert_close(grads_g[name], grads_m[name], rtol=1e-10, atol=1e-12, msg=name)


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_medst_loss_and_gradients_equal_on_both_attention_paths(compat: str) -> None:
    config = ModelConfig.preset("tiny", compat=compat)
    torch.manual_seed(0)
    masked = MedST(config).train()
    masked.vit.attention = "masked"
    grouped = copy.deepcopy(masked)
    grouped.vit.attention = "grouped"
    batch = random_batch(config, (3, 2, 4), lateral_fraction=0.5, seed=5)
    assert 0 < batch.num_lateral < batch.num_studies  # type: ignore[operator]
    results = []
    for model in (masked, grouped):
        torch.manual_seed(1)  # the same BERT dropout draws for both
        out = model(batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out.loss.detach(), {k: v.clone() for k, v in out.terms.items()}, grads))
    (loss_m, terms_m, grads_m), (loss_g, terms_g, grads_g) = results
    torch.testing.assert_close(loss_g, loss_m, rtol=1e-5, atol=1e-6)
    for key in terms_m:
        torch.testing.assert_close(terms_g[key], terms_m[key], rtol=1e-5, atol=1e-6, msg=key)
    assert grads_g.keys() == grads_m.keys() and any("mlp_l" in k for k in grads_m)
    # float32 sums over the batch in another order: compare each gradient relative to the size of the whole
    # gradient (some, such as the final LayerNorm's bias in front of batch norm, cancel to about zero).
    scale = torch.cat([g.reshape(-1) for g in grads_m.values()]).norm()
    for name in grads_m:
        error = (grads_g[name] - grads_m[name]).norm() / scale
        assert error < 1e-5, (name, float(error))
