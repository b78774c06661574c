"""Trainer overhead on CPU, measured in one run: `medst pretrain` against a bare forward + backward + AdamW step of
the same tiny Med-ST on the same batches (aim: above 0.9).

1. The loop alone: the trainer fed pre-loaded batches, against the bare step on those batches.
2. The whole data path: the trainer streaming the shards through the real loader (tar reading, JPEG decoding,
   crops, tokenising in the loader's worker processes, which persist across epochs), against the same bare step.
   Reported overall and in the steady state (after the first logged window, which holds the workers' start-up).
   On a machine with few cores the decoding competes with the model for the same CPU.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 80] [--batch-size 4] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from train_shards import make_tiny_shards

from medst.batch import Batch
from medst.model.building import build_model, load_tokenizer, model_config_for
from medst.schemas.train import PretrainConfig, resolve_config
from medst.train.components import build_loaders, prepare_text_model
from medst.train.distributed import DistInfo
from medst.train.loop import pretrain, seed_everything
from medst.train.optim import build_optimizer


class PreloadedLoader:
    """The loader interface over batches held in memory (one epoch = all of them)."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.batches_per_epoch = len(batches)
        self.epoch = 0
        self.consumed = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.consumed = state["epoch"], state["batches_consumed"]

    def __iter__(self):  # type: ignore[no-untyped-def]
        start = self.consumed if self.consumed < len(self.batches) else 0
        self.consumed = start
        for batch in self.batches[start:]:
            self.consumed += 1
            yield batch


def bare_loop(config: PretrainConfig, text_path: Path, batches: list[Batch], steps: int) -> float:
    """Studies/s of forward + backward + clip + AdamW step + zero_grad, nothing else."""
    seed_everything(config.seed)
    model = build_model(config, text_path).train()
    opt = build_optimizer(model, config.lr, config.weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    studies = 0
    t0 = time.perf_counter()
    for i in range(steps):
        batch = batches[i % len(batches)]
        out = model(batch)
        out.loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        studies += batch.num_studies
    return studies / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80, help="several epochs of the tiny shards")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per batch")
    parser.add_argument("--workers", type=int, default=1, help="loader workers for the streaming run")
    parser.add_argument("--repeats", type=int, default=2, help="alternating repeats of bare and trainer runs")
    args = parser.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        shards = make_tiny_shards(tmp / "data", patients=40, val_patients=4)
        base = {"shards": shards, "steps": args.steps, "batch_size": args.batch_size, "progress": False,
                "val_every": None, "ckpt_every": None, "log_every": 10, "export": False, "tensorboard": False,
                "device": "cpu"}  # fmt: skip
        config = resolve_config("demo", {**base, "out": tmp / "run0", "num_workers": 0})
        info = DistInfo(0, 1, 0, torch.device("cpu"))
        text_path = prepare_text_model(config, tmp / "run0", info)
        tokenizer = load_tokenizer(text_path)
        train_loader, _ = build_loaders(config, model_config_for(config, text_path), tokenizer, info)
        batches = []
        for batch in train_loader:
            batches.append(batch)
            if len(batches) == args.steps:
                break
        print(f"pre-loaded {len(batches)} batches, {sum(b.num_studies for b in batches)} studies")

        bare_rates, trainer_rates = [], []
        for r in range(args.repeats):
            bare_rates.append(bare_loop(config, text_path, batches, args.steps))
            run_cfg = config.model_copy(update={"out": tmp / f"pre{r}", "text_model": text_path})
            summary = pretrain(run_cfg, loaders=(PreloadedLoader(batches), None))
            trainer_rates.append(summary.studies / summary.train_s)
        bare, trainer = max(bare_rates), max(trainer_rates)
        print(f"bare forward+backward+step : {bare:8.1f} studies/s (best of {args.repeats})")
        print(f"trainer, pre-loaded batches: {trainer:8.1f} studies/s (best of {args.repeats})")
        print(f"RATIO trainer/bare = {trainer / bare:.3f}  (aim > 0.9)")

        stream_cfg = config.model_copy(
            update={"out": tmp / "stream", "text_model": text_path, "num_workers": args.workers}
        )
        summary = pretrain(stream_cfg)
        streamed = summary.studies / summary.train_s
        # Steady state: the mean of the logged windows after the first (which holds the workers' start-up).
        steady = summary.studies_per_s
        print(f"trainer, streaming shards ({args.workers} worker(s)): {streamed:8.1f} studies/s overall, "
              f"{steady:8.1f} after the first {config.log_every} steps")  # fmt: skip
        print(f"RATIO streaming/bare = {streamed / bare:.3f} overall, {steady / bare:.3f} steady "
              "(information: decoding shares the same cores)")  # fmt: skip


if __name__ == "__main__":
    main()
