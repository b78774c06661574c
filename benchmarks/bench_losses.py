"""Forward + backward time of the full Med-ST loss (global + local + temporal) on CPU: the vectorised losses
against the per-sample, per-token loop oracle of the tests, at the tiny model's sizes, as a ratio in one run.
Also prints the parameter counts of the paper-size model (ViT-B/16 MoVE + 6-layer BERT-base).

    .venv/bin/python benchmarks/bench_losses.py [--studies 8] [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_losses_reference import global_loop, local_loop, temporal_loop

from medst.losses import global_loss, local_loss, temporal_loss
from medst.model import MedST, ModelConfig
from medst.model.heads import WeightingAttention


def _inputs(cfg: ModelConfig, studies: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    d = cfg.proj_dim
    w_slots = cfg.text.max_length - 1
    p_slots = 2 * cfg.num_patches
    words = F.normalize(torch.randn(studies, w_slots, d, generator=g), dim=-1)
    patches = F.normalize(torch.randn(studies, p_slots, d, generator=g), dim=-1)
    counts = torch.randint(8, w_slots // 2, (studies,), generator=g)
    word_mask = torch.arange(w_slots)[None] < counts[:, None]
    patch_mask = torch.ones(studies, p_slots, dtype=torch.bool)
    patch_mask[1::2, cfg.num_patches :] = False  # every other study without a lateral
    lengths = [4] * (studies // 4) + ([studies % 4] if studies % 4 else [])
    seq = torch.cat([torch.full((k,), b) for b, k in enumerate(lengths)])
    step = torch.cat([torch.arange(k) for k in lengths])
    return {
        "u": F.normalize(torch.randn(studies, d, generator=g), dim=-1),
        "v": F.normalize(torch.randn(studies, d, generator=g), dim=-1),
        "words": words,
        "word_mask": word_mask,
        "patches": patches,
        "patch_mask": patch_mask,
        "seq": seq,
        "step": step,
        "lengths": torch.tensor(lengths),
    }


def _leaves(x: dict) -> dict:
    out = dict(x)
    for k in ("u", "v", "words", "patches"):
        out[k] = x[k].clone().requires_grad_()
    return out


def vectorised_step(x: dict, wa: nn.Module, pa: nn.Module, cfg: ModelConfig) -> torch.Tensor:
    x = _leaves(x)
    t = cfg.temperatures
    loss = global_loss(x["u"], x["v"], t.global_)
    lw, lp = local_loss(
        x["words"], x["word_mask"], x["patches"], x["patch_mask"], wa, pa, t.local, cfg.compat
    )
    fmc, rmr = temporal_loss(x["u"], x["v"], x["seq"], x["step"], x["lengths"], 4, t.temporal, cfg.compat)
    loss = loss + lw + lp + fmc + rmr
    loss.backward()
    return loss.detach()


def loop_step(x: dict, wm: Any, pm: Any, cfg: ModelConfig) -> torch.Tensor:
    x = _leaves(x)
    t = cfg.temperatures
    loss = global_loop(x["u"], x["v"], t.global_)
    lw, lp = local_loop(
        x["words"],
        x["word_mask"],
        x["patches"],
        x["patch_mask"],
        wm,
        pm,
        t.local,
        cfg.compat,
    )
    fmc, rmr = temporal_loop(x["u"], x["v"], x["seq"], x["step"], x["lengths"], 4, t.temporal, cfg.compat)
    loss = loss + lw + lp + fmc + rmr
    loss.backward()
    return loss.detach()


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--compat", choices=["clean", "reference"], default="clean")
    parser.add_argument("--skip-paper", action="store_true", help="do not build the paper-size model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = ModelConfig.preset("tiny", compat=args.compat)
    x = _inputs(cfg, args.studies)
    torch.manual_seed(0)
    wm, pm = (nn.MultiheadAttention(cfg.proj_dim, 1, batch_first=True) for _ in range(2))
    wa, pa = WeightingAttention(cfg.proj_dim), WeightingAttention(cfg.proj_dim)
    wa.load_multihead_state_dict(wm.state_dict())
    pa.load_multihead_state_dict(pm.state_dict())

    vectorised_step(x, wa, pa, cfg)  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        fast = vectorised_step(x, wa, pa, cfg)
    t_fast = (time.perf_counter() - t0) / args.repeats
    t0 = time.perf_counter()
    slow = loop_step(x, wm, pm, cfg)
    t_loop = time.perf_counter() - t0
    words = int(x["word_mask"].sum()) / args.studies
    print(
        f"full loss fwd+bwd, tiny sizes ({args.studies} studies, {x['words'].shape[1]} word slots "
        f"(~{words:.0f} real), {x['patches'].shape[1]} patch slots, dim {cfg.proj_dim}, compat={args.compat}, "
        "1 thread)"
    )
    print(f"  vectorised: {t_fast * 1e3:9.2f} ms   (mean of {args.repeats})")
    print(f"  loop      : {t_loop * 1e3:9.2f} ms   (one run)")
    print(
        f"  speed-up vectorised / loop: {t_loop / t_fast:.0f}x   |loss difference| {abs(float(fast - slow)):.2e}"
    )

    if not args.skip_paper:
        paper = ModelConfig.preset("paper")
        model = MedST(paper)
        vit, text = model.vit, model.text
        blocks: list = list(vit.blocks)
        lateral = sum(_count(b.norm2_l) + _count(b.mlp_l) for b in blocks)
        heads = sum(_count(m) for m in (model.img_global, model.img_local, model.txt_global, model.txt_local))
        weighting = _count(model.word_weighting) + _count(model.patch_weighting)
        print("paper-size model (ViT-B/16 MoVE 224, BERT-base truncated to 6 layers, random init):")
        print(
            f"  image encoder (MoVE ViT-B/16): {_count(vit) / 1e6:8.2f} M  (of which lateral expert {lateral / 1e6:.2f} M)"
        )
        print(f"  text encoder (6-layer BERT-base): {_count(text) / 1e6:5.2f} M")
        print(f"  projection heads (4): {heads / 1e6:15.2f} M")
        print(f"  local weighting layers (2): {weighting / 1e6:9.3f} M")
        print(f"  total: {_count(model) / 1e6:34.2f} M")


if __name__ == "__main__":
    main()
