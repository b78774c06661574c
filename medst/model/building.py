"""Building a Med-ST model and its tokenizer from a training config: used by the trainer and by `medst.load`
(a run's checkpoint), so inference never imports the trainer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medst.errors import UserInputError
from medst.schemas.train import PretrainConfig

if TYPE_CHECKING:
    from medst.model import MedST
    from medst.model.config import ModelConfig


def model_config_for(config: PretrainConfig, text_path: Path | None) -> ModelConfig:
    """The `ModelConfig` of a run: its ``model`` section, with the temporal loss's T from the run's seq_len and
    the text encoder read from ``text_path``."""
    from medst.model.config import ModelConfig

    if config.model.gather_negatives and config.model.compat == "reference":
        raise UserInputError(
            "--gather-negatives is a clean-mode option (the reference recipe uses each GPU's own batch); "
            "drop it or use --compat clean"
        )
    base = config.model.model_dump(by_alias=True)
    base.update(seq_len=max(2, config.seq_len))
    base["text"]["path"] = str(text_path) if text_path is not None else None
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
            load_vit_state_dict(model, config.init_image, lateral_init=config.model.lateral_init)
        except UserInputError as err:
            raise UserInputError(_init_image_message(config.init_image, err)) from err
    return model


def load_tokenizer(text_path: Path) -> Any:
    """The fast tokenizer saved in a local Hugging Face folder (offline; word ids need a fast one)."""
    from medst.model.tokenize import load_tokenizer as load_fast_tokenizer

    try:
        return load_fast_tokenizer(text_path)
    except (OSError, ValueError) as err:
        raise UserInputError(f"--text-model {text_path}: no usable fast tokenizer ({err})") from err
