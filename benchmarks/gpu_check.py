"""GPU check of the paper-size Med-ST model: training steps/s, studies/s, peak memory and model FLOPs utilisation
in bf16 autocast, on random tensors in the Batch layout (no downloads, random 6-layer BERT-base).

    python benchmarks/gpu_check.py                       # paper size, 16 windows x 4 studies, laterals, cuda
    python benchmarks/gpu_check.py --tiny --device cpu   # the same code path end-to-end on a CPU, in seconds
    python benchmarks/gpu_check.py --attention masked    # the boolean-mask attention (the baseline before #15)
    python benchmarks/gpu_check.py --compile             # torch.compile'd model: warm-up cost and step time

Prints one ``key: value`` line per figure and a final JSON line (``GPU_CHECK {...}``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from medst.model import MedST, ModelConfig
from medst.model.dummy import random_batch

# Dense bf16 tensor-core peak (no sparsity), FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def _peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():
        if key in name:
            return name, value
    return name, None


def _count_host_syncs(step: Callable[[], torch.Tensor], device: torch.device) -> int:
    """Host syncs in one training ``step``: CUDA's own sync debug mode on a GPU (warnings counted), the dispatcher
    check of `medst.train.host_sync` elsewhere (there given forward + backward only: the CPU's unfused AdamW reads
    its step counters, CPU tensors on any device)."""
    if device.type == "cuda":
        import warnings

        torch.cuda.synchronize(device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)
    from medst.train.host_sync import forbid_host_syncs

    with forbid_host_syncs(raise_on_sync=False) as found:
        step()
    return len(found)


def _inference_throughput(
    model: torch.nn.Module, batch: object, use_amp: bool, device: torch.device, sync: Callable[[], None]
) -> float:
    """Studies/s of image + report encoding without gradients (what `medst embed` and evaluation run)."""
    from medst.batch import Batch

    assert isinstance(batch, Batch)
    model.eval()
    encode = model.encode_image, model.encode_text  # type: ignore[union-attr]

    def run() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            encode[0](batch.frontal, batch.lateral, batch.has_lateral, batch.num_lateral)
            encode[1](batch.input_ids, batch.attention_mask, batch.word_ids)

    run()
    sync()
    t0 = time.perf_counter()
    repeats = 5
    for _ in range(repeats):
        run()
    sync()
    model.train()
    return repeats * batch.num_studies / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model (CPU smoke run)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--studies", type=int, default=4, help="studies per window (T)")
    parser.add_argument("--lateral-fraction", type=float, default=1.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--compat", choices=["clean", "reference"], default="clean")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument(
        "--attention",
        choices=["grouped", "masked"],
        default="grouped",
        help="how a missing lateral is kept out of attention (masked: the boolean key mask, the old path)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (warm-up is timed)")
    parser.add_argument("--tag", default="", help="a name for this variant in the summary")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also print the top N operators by device time"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    preset = "tiny" if args.tiny else "paper"
    cfg = ModelConfig.preset(preset, compat=args.compat, grad_checkpointing=args.grad_checkpointing)
    t0 = time.perf_counter()
    model = MedST(cfg).to(device).train()
    model.vit.attention = args.attention
    build_s = time.perf_counter() - t0
    step_model = torch.compile(model) if args.compile else model
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(
        model.parameters(), lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05, fused=device.type == "cuda"
    )
    lengths = [args.studies] * args.windows
    batch = random_batch(cfg, lengths, lateral_fraction=args.lateral_fraction, seed=0, device=device)
    n = batch.num_studies
    use_amp = args.precision == "bf16"

    def forward_backward() -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = step_model(batch)
        out.loss.backward()
        return out.loss

    def step() -> torch.Tensor:
        loss = forward_backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # The first step includes compilation (with --compile) and allocator growth: its time is the warm-up cost.
    t0 = time.perf_counter()
    step()
    sync()
    first_step_s = time.perf_counter() - t0
    for _ in range(args.warmup - 1):
        step()
    sync()
    host_syncs = _count_host_syncs(step if device.type == "cuda" else forward_backward, device)
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    losses = []
    for _ in range(args.steps):
        losses.append(step())
    sync()
    elapsed = time.perf_counter() - t0
    steps_per_s = args.steps / elapsed
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    # FLOPs of one training step (forward + backward) counted by PyTorch's dispatcher-level counter.
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(batch)
        out.loss.backward()
    opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    name, peak = _peak(device)
    achieved = flops * steps_per_s
    mfu = achieved / peak if peak else float("nan")
    loss_values = [float(x) for x in losses]
    inference = _inference_throughput(model, batch, use_amp, device, sync)
    result = {
        "tag": args.tag or f"{args.attention}{'+compile' if args.compile else ''}",
        "device": name,
        "preset": preset,
        "precision": args.precision,
        "compat": args.compat,
        "grad_checkpointing": args.grad_checkpointing,
        "attention": args.attention,
        "compile": args.compile,
        "first_step_s": round(first_step_s, 2),
        "host_syncs_per_step": host_syncs,
        "parameters_M": round(params / 1e6, 2),
        "studies_per_step": n,
        "windows": args.windows,
        "lateral_fraction": args.lateral_fraction,
        "build_s": round(build_s, 2),
        "steps_per_s": round(steps_per_s, 3),
        "studies_per_s": round(steps_per_s * n, 1),
        "step_ms": round(1e3 / steps_per_s, 1),
        "peak_memory_GiB": round(peak_gib, 2) if peak_gib is not None else None,
        "flops_per_step_T": round(flops / 1e12, 3),
        "achieved_TFLOPs": round(achieved / 1e12, 1),
        "peak_bf16_TFLOPs": peak / 1e12 if peak else None,
        "mfu": round(mfu, 4) if not math.isnan(mfu) else None,
        "inference_studies_per_s": round(inference, 1),
        "loss_first": round(loss_values[0], 4),
        "loss_last": round(loss_values[-1], 4),
        "all_finite": all(math.isfinite(x) for x in loss_values),
        "last_terms": {k: round(float(v), 4) for k, v in out.terms.items()},
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    print("GPU_CHECK " + json.dumps(result))
    if args.profile:
        # Where a step's time goes, three steps after warm-up (operators by self time on the device).
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            sync()
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=args.profile, max_name_column_width=60))
    if not result["all_finite"]:
        raise SystemExit("non-finite loss")


if __name__ == "__main__":
    main()
