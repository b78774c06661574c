"""The final export of a run: weights, model config, tokenizer and a short model card in ``RUN/export``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from torch import nn

from medst._version import __version__
from medst.errors import UserInputError
from medst.schemas.train import PretrainConfig, RunSummary
from medst.storage import Location


def _data_summary(shards: Location) -> dict[str, Any]:
    summary = shards / "summary.json"
    try:
        if not summary.is_file():
            return {}
        data = json.loads(summary.read_text())
    except UserInputError:
        return {}  # a store that stopped answering after training must not cost the export; the card says so
    return {"splits": data.get("splits", {}), "options": data.get("options", {})}


def format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def loss_formula(config: PretrainConfig) -> str:
    """The loss as the model card writes it, e.g. ``global + 1 x local + 1 x temporal``, from `LOSS_TERMS`; a term
    weighted 0 is not part of what the model was trained on and is left out."""
    from medst.model.medst import loss_parts

    return " + ".join(
        part if weight is None else f"{weight:g} x {part}"
        for part, weight, _names in loss_parts(config.model)
        if weight != 0
    )


def model_card(config: PretrainConfig, summary: RunSummary, data: dict[str, Any]) -> str:
    """A short README: what the model is, what it was trained on, the recipe, and how training went."""
    splits = data.get("splits", {})
    data_lines = [
        f"- `{name}`: {s.get('samples', '?')} patient timelines, {s.get('studies', '?')} studies, "
        f"{s.get('images', '?')} images"
        for name, s in sorted(splits.items())
    ] or ["- (no summary.json found next to the shards)"]
    val_lines = [f"- {k}: {v:.4g}" for k, v in sorted(summary.val.items())] or ["- (no validation split)"]
    length = f"{config.steps} steps" if config.steps is not None else f"{config.epochs} epochs"
    return "\n".join(
        [
            "# Med-ST model (medst export)",
            "",
            "Spatial and temporal vision-language pre-training on chest X-rays (Yang et al., ICML 2024): a MoVE ViT",
            "image encoder (frontal + lateral views) and a BERT text encoder with global, local and temporal",
            f"alignment heads. Trained with medst {__version__}, preset `{config.preset}`, model preset "
            f"`{config.model_preset}`, compat `{config.model.compat}`.",
            "",
            "## Data",
            f"Shards: `{config.shards.name}` (sequence length T = {config.seq_len}).",
            *data_lines,
            "",
            "## Recipe",
            f"- AdamW lr {config.lr:g}, betas {tuple(config.betas)}, weight decay {config.weight_decay:g} "
            f"(no decay on biases, norms, position embeddings); cosine schedule with {config.warmup_fraction:.0%} "
            f"linear warm-up, min lr {config.min_lr:g}",
            f"- {length} ({summary.steps} optimizer steps done), {config.batch_size} windows per batch per process, "
            f"{summary.world_size} process(es), gradient accumulation {config.accumulate}, "
            f"clip {config.max_grad_norm}, precision {config.precision}",
            f"- loss = {loss_formula(config)}; seed {config.seed}",
            "",
            "## Training",
            f"- loss: first logged {format_number(summary.first_loss)}, last logged {format_number(summary.last_loss)}",
            f"- throughput: {summary.studies_per_s:.1f} studies/s; wall time {summary.wall_s:.0f} s",
            "",
            "## Validation (last)",
            *val_lines,
            "",
            "Load with `medst.model.io.load_model(folder)`. Not a medical device; research use only.",
            "",
        ]
    )


def export_run(
    model: nn.Module, tokenizer: Any, config: PretrainConfig, summary: RunSummary, out_dir: Path
) -> Path:
    """Write ``out_dir`` atomically (staged next to it, then renamed): safetensors weights, model config JSON and
    tokenizer (via `medst.model.io.save_model`), ``training.json`` (run config + summary) and ``README.md``."""
    from medst.model.io import save_model

    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    extra = {
        "medst_version": __version__,
        "pretrain_config": config.model_dump(mode="json"),
        "summary": summary.model_dump(mode="json"),
        # The shard options (intensity preset, stored image size) travel with the weights, so `medst.load`
        # prepares new images exactly as the training images were prepared.
        "data": _data_summary(config.shards),
    }
    save_model(model, staging, tokenizer=tokenizer, extra=extra)  # type: ignore[arg-type]
    (staging / "training.json").write_text(json.dumps(extra, indent=1))
    (staging / "README.md").write_text(model_card(config, summary, _data_summary(config.shards)))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir
