"""Turning a `PretrainConfig` into the pieces a run needs: text model folder, model, tokenizer, loaders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medst.errors import UserInputError
from medst.schemas.train import PretrainConfig
from medst.train.distributed import DistInfo, barrier

if TYPE_CHECKING:
    from medst.model import MedST
    from medst.model.config import ModelConfig
    from medst.shards.loader import TimelineLoader


def shard_files(shards: Path, split: str) -> list[Path]:
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


def training_texts(shards: Path, split: str = "train") -> list[str]:
    """Every study's report text of ``split``, read from the ``json`` members of the shards (through the checked
    member reader), in plan order."""
    from medst.shards.members import read_members

    texts: list[str] = []
    for tar_path in shard_files(shards, split):
        with open(tar_path, "rb") as fh:
            for name, data in read_members(fh, tar_path):
                if name.endswith(".json"):
                    sample = json.loads(data)
                    texts.extend(study["text"] for study in sample.get("studies", []) if study.get("text"))
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


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def model_config_for(config: PretrainConfig, text_path: Path | None) -> ModelConfig:
    """The `ModelConfig` of a run: the named model preset, then the run's loss/compat options, then
    ``model_overrides`` (dotted keys such as ``text.num_layers``)."""
    from medst.model.config import ModelConfig

    if config.gather_negatives and config.compat == "reference":
        raise UserInputError(
            "--gather-negatives is a clean-mode option (the reference recipe uses each GPU's own batch); "
            "drop it or use --compat clean"
        )
    base = ModelConfig.preset(config.model_preset).model_dump(by_alias=True)
    base.update(
        lambda1=config.lambda1,
        lambda2=config.lambda2,
        compat=config.compat,
        lateral_init=config.lateral_init,
        grad_checkpointing=config.grad_checkpointing,
        seq_len=max(2, config.seq_len),
        # The model gathers through the default process group; a world of one has nothing to gather.
        gather_negatives=config.gather_negatives,
    )
    base["text"]["path"] = str(text_path) if text_path is not None else None
    for key, value in config.model_overrides.items():
        _set_dotted(base, key, value)
    try:
        return ModelConfig.model_validate(base)
    except ValueError as err:
        raise UserInputError(f"invalid model settings: {err}") from err


def _init_image_message(path: Path, err: Exception) -> str:
    text = str(err)
    return f"--init-image {text}" if text.startswith(str(path)) else f"--init-image {path}: {text}"


def check_init_image(config: PretrainConfig) -> None:
    """Raise `UserInputError` when ``--init-image`` names no file, or a torch file holding pickled objects rather
    than tensors (cheap: the loop checks it before any work; tensors are memory-mapped, not read, and nothing is
    ever unpickled beyond what ``weights_only=True`` allows)."""
    path = config.init_image
    if path is None:
        return
    if not path.is_file():
        raise UserInputError(
            f"--init-image {path}: file not found "
            "(give a local timm/DeiT .safetensors/.pth or an MGCA .ckpt file)"
        )
    if path.suffix == ".safetensors":
        return
    import pickle

    import torch

    try:
        torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        from medst.model.weights import read_state_dict

        try:
            read_state_dict(path)  # refuses the file with medst's own message
        except UserInputError as err:
            raise UserInputError(_init_image_message(path, err)) from err
    except Exception:  # e.g. a legacy (non-zip) torch file cannot be mapped: read in full by build_model
        pass


def build_model(config: PretrainConfig, text_path: Path | None) -> MedST:
    """A freshly initialised `MedST` for the run (optionally with image weights from ``--init-image``)."""
    from medst.model import MedST

    check_init_image(config)
    model = MedST(model_config_for(config, text_path))
    if config.init_image is not None:
        from medst.model.weights import load_vit_state_dict

        # Loaded after construction, so a "copy" lateral expert must be copied again from the loaded frontal one.
        try:
            load_vit_state_dict(model, config.init_image, lateral_init=config.lateral_init)
        except UserInputError as err:
            raise UserInputError(_init_image_message(config.init_image, err)) from err
    return model


def load_tokenizer(text_path: Path) -> Any:
    """The fast tokenizer saved in a local Hugging Face folder (offline; word ids need a fast one)."""
    from medst.shards.tokenize import load_tokenizer as load_fast_tokenizer

    try:
        return load_fast_tokenizer(text_path)
    except (OSError, ValueError) as err:
        raise UserInputError(f"--text-model {text_path}: no usable fast tokenizer ({err})") from err


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
