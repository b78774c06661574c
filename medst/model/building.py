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
    from medst.model.tokenize import load_tokenizer as load_fast_tokenizer

    try:
        return load_fast_tokenizer(text_path)
    except (OSError, ValueError) as err:
        raise UserInputError(f"--text-model {text_path}: no usable fast tokenizer ({err})") from err
