"""Turning a `PretrainConfig` into the pieces a run needs: text model folder, model, tokenizer, loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medst.errors import UserInputError
from medst.schemas.train import PretrainConfig
from medst.storage import Location
from medst.train.distributed import DistInfo, barrier

if TYPE_CHECKING:
    from medst.model.config import ModelConfig
    from medst.shards.loader import TimelineLoader


def shard_files(shards: Location, split: str) -> list[Location]:
    """The complete tar shards of ``split`` that the folder's plan names, in plan order (never a glob)."""
    from medst.shards.index import list_entries

    return [shards / entry.shard for entry in list_entries(shards, split)]


def check_complete_shards(config: PretrainConfig) -> None:
    """Refuse (`UserInputError`) a shard folder whose plan names shards that are not there (a ``--part i/n`` set
    with parts missing, or damaged shards), unless ``allow_partial``."""
    from medst.shards.index import missing_shards

    missing = missing_shards(config.shards)
    if missing and not config.allow_partial:
        raise UserInputError(
            f"{config.shards} lacks {len(missing)} shard(s) of its plan (first: {missing[0]}.tar): build the "
            "missing --part runs into it (or copy their folders in), or pass --allow-partial to train on what is there"
        )


def compat_mismatch(config: PretrainConfig) -> str | None:
    """A one-line warning when the run's ``compat`` is not the ``compat`` the shards' timelines were built with
    (plan.json ``build``): reference training expects the authors' time steps (one per frontal image), clean
    training one step per study. None when they agree or the plan does not record the build."""
    from medst.schemas.shards import plan_build

    build = plan_build(config.shards)
    if build is None or build.compat == config.model.compat:
        return None
    steps = {
        "clean": "one time step per study",
        "reference": "the authors' time steps, one per frontal image",
    }
    return (
        f"training with --compat {config.model.compat} on shards whose timelines were built with --compat "
        f"{build.compat} ({steps[build.compat]}); for the {config.model.compat} recipe rebuild them with "
        f"`medst build-sequences --compat {config.model.compat}`, or train with --compat {build.compat}"
    )


def training_texts(shards: Location, split: str = "train") -> list[str]:
    """Every study's report text of ``split``, read from the timelines of the shards (through the checked member
    reader), in plan order; a sample without a readable timeline raises `ShardReadError` naming it."""
    from medst.shards.format import iter_samples

    texts: list[str] = []
    for tar_path in shard_files(shards, split):
        with tar_path.open("rb") as fh:
            for sample in iter_samples(fh, tar_path):
                texts.extend(study["text"] for study in sample.timeline()["studies"] if study.get("text"))
    return texts


def prepare_text_model(config: PretrainConfig, run_dir: Path, info: DistInfo) -> Path:
    """The local Hugging Face folder of the text encoder.

    ``--text-model`` wins; otherwise, when the config asks for it (demo preset), rank 0 trains a WordPiece
    tokenizer and a random tiny BERT on the training texts into ``RUN/text_model`` once (a resumed run reuses it),
    so the run needs nothing from the internet. Neither is a `UserInputError`.
    """
    if config.text_model is not None:
        if not config.text_model.is_dir():
            raise UserInputError(
                f"--text-model {config.text_model}: not a folder (give a local Hugging Face model)"
            )
        return config.text_model
    if not config.build_demo_text_model:
        raise UserInputError(
            "no text model: pass --text-model PATH (a local Hugging Face BERT folder such as Bio_ClinicalBERT), "
            "or use --config demo, which builds a small one from the shards"
        )
    target = run_dir / "text_model"
    if info.is_main and not (target / "config.json").is_file():
        from medst.model.config import ModelConfig
        from medst.model.text import build_demo_text_model

        texts = training_texts(config.shards, config.train_split)
        if not texts:
            raise UserInputError(f"{config.shards}: no report texts in the {config.train_split!r} split")
        text_cfg = ModelConfig.preset(config.model_preset).text
        staging = run_dir / ".text_model.partial"
        if staging.exists():
            shutil.rmtree(staging)
        build_demo_text_model(
            texts,
            staging,
            vocab_size=text_cfg.vocab_size,
            hidden=text_cfg.hidden,
            layers=text_cfg.layers,
            heads=text_cfg.heads,
            max_length=text_cfg.max_length,
            seed=config.seed,
        )
        hf_config_file = staging / "config.json"
        hf_config = json.loads(hf_config_file.read_text())
        hf_config["hidden_dropout_prob"] = hf_config["attention_probs_dropout_prob"] = (
            config.demo_text_dropout
        )
        hf_config_file.write_text(json.dumps(hf_config, indent=2))
        staging.rename(target)
    barrier(info)
    return target


def build_loaders(
    config: PretrainConfig, model_config: ModelConfig, tokenizer: Any, info: DistInfo
) -> tuple[TimelineLoader, TimelineLoader | None]:
    """Training loader (random crops, shuffled, every rank the same number of batches) and, when the shards hold
    a validation split, a validation loader (centre crops, in order)."""
    from medst.schemas.shards import LoaderConfig
    from medst.shards.loader import TimelineLoader

    check_complete_shards(config)
    if not shard_files(config.shards, config.train_split):
        raise UserInputError(f"{config.shards}: no complete {config.train_split!r} shards")
    crop = model_config.image_size
    # The paper letterboxes to 256 and crops 224; keep that ratio for other image sizes.
    letterbox = max(crop, round(crop * 256 / 224))
    common: dict[str, Any] = {
        "shards": config.shards,
        "seq_len": config.seq_len,
        "windows_per_batch": config.batch_size,
        "letterbox": letterbox,
        "crop": crop,
        "max_tokens": model_config.text.max_length,
        "seed": config.seed,
        "num_workers": config.num_workers,
        "pin_memory": info.device.type == "cuda" and config.num_workers > 0,
        "skip_bad_samples": config.skip_bad_samples,
    }
    train = TimelineLoader(
        LoaderConfig(split=config.train_split, random_offset=config.random_offset, train=True, **common),
        tokenizer,
        rank=info.rank,
        world_size=info.world_size,
    )
    val = None
    if shard_files(config.shards, config.val_split):
        val_loader = TimelineLoader(
            LoaderConfig(split=config.val_split, train=False, shuffle=False, drop_last=False, **common),
            tokenizer,
            rank=info.rank,
            world_size=info.world_size,
        )
        val = val_loader if val_loader.batches_per_epoch > 0 else None
    return train, val
