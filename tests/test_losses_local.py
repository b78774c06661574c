"""Modality-weighted local loss: vectorised vs the per-token loop oracle (both modes, padded words, missing
laterals), the learned weighting layer vs the authors' nn.MultiheadAttention, hand case, gradcheck."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_losses_reference import local_loop
from torch import nn

from medst.losses import local_loss
from medst.model.heads import WeightingAttention


def _layers(d: int, seed: int, dtype: torch.dtype = torch.float32) -> tuple[Any, Any, Any, Any]:
    """Two authors'-style MHA layers and our weighting layers holding the same query/key weights."""
    torch.manual_seed(seed)
    mhas = [nn.MultiheadAttention(d, 1, batch_first=True).to(dtype) for _ in range(2)]
    for mha in mhas:  # non-zero biases so that they are exercised too
        with torch.no_grad():
            mha.in_proj_bias.normal_()
    ours = [WeightingAttention(d).to(dtype) for _ in range(2)]
    for mha, w in zip(mhas, ours, strict=True):
        w.load_multihead_state_dict(mha.state_dict())
    return mhas[0], mhas[1], ours[0], ours[1]


def _inputs(n: int, w: int, p: int, d: int, seed: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    words = F.normalize(torch.randn(n, w, d, generator=g, dtype=dtype), dim=-1)
    patches = F.normalize(torch.randn(n, p, d, generator=g, dtype=dtype), dim=-1)
    counts = torch.randint(1, w + 1, (n,), generator=g)
    counts[0] = w  # one study without padding
    word_mask = torch.arange(w)[None, :] < counts[:, None]
    # Second half of the patch slots is the lateral view; missing for every other study.
    patch_mask = torch.ones(n, p, dtype=torch.bool)
    patch_mask[1::2, p // 2 :] = False
    return words, word_mask, patches, patch_mask


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_local_matches_loop(compat: str) -> None:
    words, wmask, patches, pmask = _inputs(4, 6, 8, 16, 0)
    wm, pm, wa, pa = _layers(16, 1)
    got = local_loss(words, wmask, patches, pmask, wa, pa, 0.1, compat)  # type: ignore[arg-type]
    ref = local_loop(words, wmask, patches, pmask, wm, pm, 0.1, compat)
    assert torch.allclose(got[0], ref[0], atol=1e-5, rtol=1e-5)
    assert torch.allclose(got[1], ref[1], atol=1e-5, rtol=1e-5)


def test_weighting_layer_equals_multihead_attention_weights() -> None:
    wm, _, wa, _ = _layers(8, 2)
    keys = torch.randn(3, 5, 8)
    query = keys.mean(dim=1)
    _, expected = wm(query[:, None], keys, keys, need_weights=True)
    assert torch.allclose(wa(query, keys), expected[:, 0], atol=1e-6)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [True] * 4 + [False]])
    _, expected = wm(query[:, None], keys, keys, key_padding_mask=~mask, need_weights=True)
    assert torch.allclose(wa(query, keys, mask), expected[:, 0], atol=1e-6)


def test_clean_ignores_padding_content_reference_does_not() -> None:
    words, wmask, patches, pmask = _inputs(3, 6, 8, 16, 3)
    _, _, wa, pa = _layers(16, 4)
    other_words = words.clone()
    other_words[~wmask] = F.normalize(torch.randn(int((~wmask).sum()), 16), dim=-1)
    other_patches = patches.clone()
    other_patches[~pmask] = F.normalize(torch.randn(int((~pmask).sum()), 16), dim=-1)
    clean_a = local_loss(words, wmask, patches, pmask, wa, pa, 0.1, "clean")
    clean_b = local_loss(other_words, wmask, other_patches, pmask, wa, pa, 0.1, "clean")
    ref_a = local_loss(words, wmask, patches, pmask, wa, pa, 0.1, "reference")
    ref_b = local_loss(other_words, wmask, other_patches, pmask, wa, pa, 0.1, "reference")
    assert torch.allclose(clean_a[0], clean_b[0], atol=1e-6) and torch.allclose(
        clean_a[1], clean_b[1], atol=1e-6
    )
    assert not torch.allclose(ref_a[0], ref_b[0]) and not torch.allclose(ref_a[1], ref_b[1])


def _uniform(query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.full(keys.shape[:2], 1.0 / keys.shape[1])


def test_local_hand_case() -> None:
    """Two words e1, e2 and two patches e1, e2 with uniform weights at t = 1 (worked out by hand)."""
    e = torch.eye(2)[None]
    mask = torch.ones(1, 2, dtype=torch.bool)
    sig = math.e / (math.e + 1)
    r = math.sqrt(sig**2 + (1 - sig) ** 2)
    c_norm = math.log(1 + math.exp(-(2 * sig - 1) / r))  # with re-normalised attended features
    c_raw = math.log(1 + math.exp(-(2 * sig - 1)))  # h_j not re-normalised (reference)
    word, patch = local_loss(e, mask, e, mask, _uniform, _uniform, 1.0, "clean")
    assert abs(float(word) - c_norm) < 1e-6 and abs(float(patch) - c_norm) < 1e-6
    word, patch = local_loss(e, mask, e, mask, _uniform, _uniform, 1.0, "reference")
    assert abs(float(word) - c_norm) < 1e-6 and abs(float(patch) - c_raw) < 1e-6


def test_detached_weights_stop_gradient_into_weighting_layers() -> None:
    words, wmask, patches, pmask = _inputs(2, 4, 6, 8, 5)
    _, _, wa, pa = _layers(8, 6)
    words.requires_grad_()
    torch.stack(
        local_loss(words, wmask, patches, pmask, wa, pa, 0.1, "clean", detach_weights=True)
    ).sum().backward()
    assert all(p.grad is None for p in [*wa.parameters(), *pa.parameters()])
    torch.stack(local_loss(words, wmask, patches, pmask, wa, pa, 0.1, "clean")).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*wa.parameters(), *pa.parameters()])


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_local_gradcheck(compat: str) -> None:
    words, wmask, patches, pmask = _inputs(2, 3, 4, 4, 7, torch.float64)
    _, _, wa, pa = _layers(4, 8, torch.float64)
    words.requires_grad_()
    patches.requires_grad_()

    def fn(w: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        a, b = local_loss(w, wmask, p, pmask, wa, pa, 0.5, compat)  # type: ignore[arg-type]
        return a + b

    assert torch.autograd.gradcheck(fn, (words, patches))
