"""``--compile``: the MoVE ViT, grouped (mask-free) attention included, compiles with ``torch.compile``'s default
backend (inductor) on the CPU and gives the eager values and gradients, also when a batch with another number of
laterals comes (which recompiles the graph once with a symbolic split instead of failing)."""

from __future__ import annotations

import copy

import pytest
import torch

from medst.model import ModelConfig
from medst.model.vit import MoveViT


def _inductor_unavailable() -> str | None:
    """Why inductor cannot run here (no C++ compiler), or None."""
    try:
        from torch._inductor import cpp_builder

        cpp_builder.get_cpp_compiler()
    except Exception as err:  # any failure to find a compiler means inductor cannot build kernels
        return f"torch.compile's inductor backend has no C++ compiler here: {err}"
    return None


@pytest.mark.slow
def test_compiled_vit_matches_eager_values_and_gradients() -> None:
    reason = _inductor_unavailable()
    if reason is not None:
        pytest.skip(reason)
    cfg = ModelConfig.preset("tiny", image_size=16, patch_size=8, width=16, depth=1, heads=2)
    torch.manual_seed(0)
    eager = MoveViT(cfg).train()
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module)
    g = torch.Generator().manual_seed(0)
    for lateral_flags in ([True, False, True, False], [True, True, False, True]):
        has = torch.tensor(lateral_flags)
        frontal = torch.randn(4, 3, 16, 16, generator=g)
        lateral = torch.randn(4, 3, 16, 16, generator=g) * has[:, None, None, None]
        outs = []
        for model, module in ((eager, eager), (compiled, compiled_module)):
            out = model(frontal, lateral, has, int(has.sum()))
            weights = torch.linspace(-1, 1, out.numel()).view_as(out)
            (out * weights).sum().backward()
            outs.append((out.detach(), {n: p.grad.clone() for n, p in module.named_parameters()}))
            module.zero_grad(set_to_none=True)
        (out_e, grads_e), (out_c, grads_c) = outs
        torch.testing.assert_close(out_c, out_e, rtol=1e-4, atol=1e-5)
        for name in grads_e:
            torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-3, atol=1e-5, msg=name)
