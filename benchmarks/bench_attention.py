"""MoVE ViT forward + backward on the CPU: the grouped (mask-free) attention against the boolean-mask path it
replaced, on the same weights and images, at several shares of studies with a lateral; ratios measured in one run.

On a GPU the gain is the flash kernel, which a mask rules out (`gpu_check.sh` measures that); on the CPU both run
SDPA's math kernel, so what shows here is the work saved on studies without a lateral (their queries attend over
197 keys instead of 393) and the cost of the reordering.

    .venv/bin/python benchmarks/bench_attention.py [--studies 16] [--repeats 5] [--size base|small]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from medst.model import ModelConfig
from medst.model.vit import MoveViT


def _step(vit: MoveViT, frontal: torch.Tensor, lateral: torch.Tensor, has: torch.Tensor) -> float:
    t0 = time.perf_counter()
    vit(frontal, lateral, has, int(has.sum())).float().square().mean().backward()
    vit.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def _compare(models: tuple[MoveViT, MoveViT], inputs: tuple[torch.Tensor, ...], repeats: int) -> list[float]:
    """Best time of each model, the two interleaved step by step (a busy machine slows both alike)."""
    for vit in models:
        _step(vit, *inputs)  # warm-up
    best = [float("inf")] * len(models)
    for _ in range(repeats):
        for i, vit in enumerate(models):
            best[i] = min(best[i], _step(vit, *inputs))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--size", choices=["small", "base"], default="small", help="small: 4 blocks of width 192; base: ViT-B"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    overrides = {} if args.size == "base" else {"width": 192, "depth": 4, "heads": 3}
    cfg = ModelConfig.preset("paper", **overrides)
    masked = MoveViT(cfg, attention="masked").train()
    grouped = copy.deepcopy(masked)
    grouped.attention = "grouped"
    n, size = args.studies, cfg.image_size
    g = torch.Generator().manual_seed(0)
    frontal = torch.randn(n, 3, size, size, generator=g)
    print(
        f"MoVE ViT {args.size}, {n} studies of {size}px, best of {args.repeats}, {torch.get_num_threads()} threads"
    )
    for share in (1.0, 0.75, 0.5, 0.0):
        has = torch.arange(n) < round(share * n)
        has = has[torch.randperm(n, generator=g)]
        lateral = torch.randn(n, 3, size, size, generator=g) * has[:, None, None, None]
        t_masked, t_grouped = _compare((masked, grouped), (frontal, lateral, has), args.repeats)
        print(
            f"laterals {share:4.0%}: masked {t_masked * 1e3:7.1f} ms  grouped {t_grouped * 1e3:7.1f} ms  "
            f"speed-up x{t_masked / t_grouped:.2f}"
        )


if __name__ == "__main__":
    main()
