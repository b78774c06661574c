"""GPU check of the trainer: the paper-size Med-ST (ViT-B/16 MoVE + 6-layer BERT-base) trained by `medst pretrain`'s
loop in bf16 on synthetic shards, a few hundred steps: studies/s, model FLOPs utilisation, peak memory and the
falling loss. Everything is made on the machine (synthetic archive -> build-sequences -> shards, a WordPiece
tokenizer + random BERT); nothing is downloaded.

    python benchmarks/gpu_train_check.py                                # paper size on cuda, ~1-2 minutes
    python benchmarks/gpu_train_check.py --tiny --device cpu --steps 5  # the same path on a CPU, in seconds

Prints ``key: value`` lines and a final ``GPU_TRAIN_CHECK {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Dense bf16 tensor-core peak (no sparsity), FLOP/s.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


REPO = Path(__file__).resolve().parents[1]
# Relative paths on the command line are relative to where the script started (_ensure_namespace may chdir).
START_DIR = Path.cwd()


def _ensure_namespace() -> None:
    """Make ``medst.cli``, ``medst.schemas`` and ``medst.data_manifests`` importable from a bare source tree.

    An installed medst maps the top-level ``cli/``, ``schemas/`` and ``data_manifests/`` folders into the
    ``medst`` namespace; a GPU machine that only has the checkout lacks that mapping. Then a temporary overlay
    package of symlinks gives the installed layout, on ``sys.path`` and ``PYTHONPATH`` (so loader workers and
    subprocesses see it too).
    """
    try:
        import medst.cli
        import medst.schemas  # noqa: F401

        return
    except ModuleNotFoundError:
        pass
    overlay = Path(tempfile.mkdtemp(prefix="medst-overlay-"))
    package = overlay / "medst"
    package.mkdir()
    for entry in (REPO / "medst").iterdir():
        (package / entry.name).symlink_to(entry)
    for name in ("schemas", "cli", "data_manifests"):
        (package / name).symlink_to(REPO / name)
    sys.path.insert(0, str(overlay))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(overlay), os.environ.get("PYTHONPATH")) if p)
    # Loader workers fork from a server started as `python -c`, whose sys.path begins with the working
    # directory: from the checkout's root that finds the bare `medst/` before the overlay.
    os.chdir(overlay)
    for name in [m for m in sys.modules if m == "medst" or m.startswith("medst.")]:
        del sys.modules[name]


def _medst(*args: str) -> None:
    """Run one `medst` stage in a subprocess (as a user would), failing loudly."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--medst-cli", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def make_shards(root: Path, patients: int, image_size: int, workers: int) -> Path:
    _medst("synth", str(root / "archive"), "--patients", str(patients), "--image-size", str(image_size),
           "--workers", str(workers), "--quiet")  # fmt: skip
    _medst("build-sequences", str(root / "archive"), "-o", str(root / "seq"))
    _medst("shard", str(root / "seq"), "-o", str(root / "shards"), "--image-size", str(image_size),
           "--samples-per-shard", "32", "--workers", str(workers), "--quiet")  # fmt: skip
    return root / "shards"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--medst-cli":  # one pipeline stage, run by `_medst`
        _ensure_namespace()
        from medst.cli.app import main as cli_main

        sys.argv = ["medst", *sys.argv[2:]]
        cli_main()
        return
    _ensure_namespace()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and data (CPU smoke run)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps (default 300; 20 with --tiny)"
    )
    parser.add_argument(
        "--batch-size", default="10", help="windows per batch (paper: 10), or 'auto' (largest that fits)"
    )
    parser.add_argument(
        "--bare-steps", type=int, default=None, help="timed bare model steps (default 20; 3 tiny)"
    )
    parser.add_argument(
        "--batch-size-max",
        type=int,
        default=16,
        help="with --batch-size auto: the largest size tried (16 windows keep 300 steps within the 5 minutes)",
    )
    parser.add_argument("--patients", type=int, default=None)
    parser.add_argument(
        "--shards",
        type=Path,
        default=Path(os.environ["MEDST_GPU_SHARDS"]) if os.environ.get("MEDST_GPU_SHARDS") else None,
        help="use these shards instead of generating them (a GPU image may lack pydicom/polars); "
        "default: $MEDST_GPU_SHARDS",
    )
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--compile", action="store_true")
    args, _unknown = parser.parse_known_args()  # gpu_check.sh passes its own options through

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from medst.model.building import build_model, load_tokenizer, model_config_for
    from medst.model.text import build_demo_text_model
    from medst.schemas.train import resolve_config
    from medst.train.components import build_loaders, training_texts
    from medst.train.distributed import DistInfo
    from medst.train.logging import read_metrics
    from medst.train.loop import pretrain, seed_everything

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    patients = args.patients or (40 if args.tiny else 400)
    auto = args.batch_size == "auto"
    batch_options: dict[str, object] = (
        {"batch_size_auto": True, "batch_size": 4, "batch_size_max": args.batch_size_max}
        if auto
        else {"batch_size": int(args.batch_size)}
    )
    args.bare_steps = args.bare_steps or (3 if args.tiny else 20)
    args.steps = args.steps or (20 if args.tiny else 300)
    result: dict[str, object] = {"preset": "demo" if args.tiny else "paper", "device": str(device)}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        if args.shards is not None:
            shards = (START_DIR / args.shards).resolve()
        else:
            shards = make_shards(tmp, patients, 128 if args.tiny else 256, args.workers)
        result["data_s"] = round(time.perf_counter() - t0, 1)

        preset = "demo" if args.tiny else "paper"
        text_cfg = resolve_config(preset)
        from medst.model.config import ModelConfig

        tc = ModelConfig.preset(text_cfg.model_preset).text
        layers = tc.layers if args.tiny else 6  # the paper keeps 6 BERT-base layers
        text_path = build_demo_text_model(
            training_texts(shards), tmp / "text_model", vocab_size=tc.vocab_size if args.tiny else 30522,
            hidden=tc.hidden, layers=layers, heads=tc.heads, max_length=tc.max_length,
        )  # fmt: skip
        config = resolve_config(
            preset,
            {"shards": shards, "out": tmp / "run", "steps": args.steps, **batch_options,
             "text_model": text_path, "device": args.device, "num_workers": max(1, args.workers - 2),
             "val_every": max(1, args.steps // 3), "ckpt_every": None, "log_every": max(1, min(10, args.steps // 5)),
             "export": False, "tensorboard": False, "progress": False, "compile": args.compile},
        )  # fmt: skip

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        summary = pretrain(config)
        run_s = time.perf_counter() - t0
        peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        if auto:  # the batch size the run found and recorded
            import yaml

            found = yaml.safe_load((tmp / "run" / "config.yaml").read_text())["batch_size"]
            config = config.model_copy(update={"batch_size": found, "batch_size_auto": False})
            search = json.loads((tmp / "run" / "batch_size_search.json").read_text())
            result["batch_size_trials"] = [(t["windows"], t["fits"]) for t in search["trials"]]

        # The bare model step on one real batch of the same size (no loader, no logging): the trainer's ceiling.
        # FLOPs of one training step (forward + backward), counted by PyTorch on that batch.
        info = DistInfo(0, 1, 0, device)
        loader, _ = build_loaders(
            config, model_config_for(config, text_path), load_tokenizer(text_path), info
        )
        batch = next(iter(loader)).to(device)
        loader.close()
        seed_everything(0)
        probe = build_model(config, text_path).to(device).train()
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
        counter = FlopCounterMode(display=False)
        with counter:
            with autocast:
                out = probe(batch)
            out.loss.backward()
        flops_per_study = counter.get_total_flops() / batch.num_studies
        params = sum(p.numel() for p in probe.parameters())
        bare_model = torch.compile(probe) if args.compile else probe
        opt = torch.optim.AdamW(probe.parameters(), lr=1e-5, fused=device.type == "cuda")

        def bare_step() -> None:
            with autocast:
                loss = bare_model(batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(3):
            bare_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(args.bare_steps):
            bare_step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        bare_studies_per_s = args.bare_steps * batch.num_studies / (time.perf_counter() - t0)
        del out
        records = read_metrics(tmp / "run" / "metrics.jsonl")

    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    achieved = flops_per_study * summary.studies_per_s
    head, tail = train[: max(1, len(train) // 5)], train[-max(1, len(train) // 5) :]
    loss_head = sum(r["loss"] for r in head) / len(head)
    loss_tail = sum(r["loss"] for r in tail) / len(tail)
    result.update(
        {
            "device_name": name,
            "parameters_M": round(params / 1e6, 1),
            "steps": summary.steps,
            "studies_per_step": batch.num_studies,
            "run_s": round(run_s, 1),
            "train_s": round(summary.train_s, 1),
            "studies_per_s": round(summary.studies_per_s, 1),
            "flops_per_study_G": round(flops_per_study / 1e9, 1),
            "achieved_TFLOPs": round(achieved / 1e12, 1),
            "mfu": round(achieved / peak, 4) if peak else None,
            "peak_memory_GiB": round(peak_gib, 2) if peak_gib is not None else None,
            "batch_size": config.batch_size,
            "batch_size_auto": auto,
            "bare_step_studies_per_s": round(bare_studies_per_s, 1),
            "trainer_vs_bare_step": round(summary.studies_per_s / bare_studies_per_s, 3),
            "loss_first_fifth": round(loss_head, 3),
            "loss_last_fifth": round(loss_tail, 3),
            "loss_falls": loss_tail < loss_head,
            "loss_curve": [(r["step"], round(r["loss"], 3)) for r in train[:: max(1, len(train) // 8)]],
            # Per logged window: a data path that falls behind shows as dips (e.g. at epoch boundaries).
            "studies_per_s_windows": [round(r["studies_per_s"]) for r in train],
            "epochs": round(summary.epochs, 2),
            "val": [
                {
                    "step": r["step"],
                    "loss": round(r["loss"], 3),
                    "acc_i2t": round(r.get("acc_i2t", math.nan), 3),
                    "chance": round(r.get("chance_top1", math.nan), 3),
                }
                for r in val
            ],
        }
    )
    for key, value in result.items():
        print(f"{key}: {value}")
    print("GPU_TRAIN_CHECK " + json.dumps(result))
    if not all(math.isfinite(r["loss"]) for r in train):
        raise SystemExit("non-finite training loss")


if __name__ == "__main__":
    main()
