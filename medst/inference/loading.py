"""`load`: find a trained Med-ST model on disk, check it, and wrap it in a `MedSTEncoder`.

Accepted paths: an exported model folder (``model.safetensors`` + ``config.json`` + tokenizer, written by
`medst.model.io.save_model`), a run folder (its ``export/``, else its newest checkpoint), a checkpoint folder
``RUN/checkpoints/step-N``, or a weights file (``.safetensors``; ``.pt``/``.pth``/``.bin`` only as plain tensors)
next to a ``config.json``. A checkpoint written by the authors' research code (Lightning ``.ckpt``,
``img_encoder_q.*``/``text_encoder_q.*`` tensors) loads too, given ``text_model=`` the local BERT folder its text
encoder came from (tokenizer and config); its model is built in ``compat="reference"``. Nothing is ever unpickled: safetensors, JSON and YAML are parsed as data, and a torch
file goes through ``torch.load(weights_only=True)``, which refuses anything but tensors and containers.
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from medst.schemas.common import Precision

if TYPE_CHECKING:
    from medst.model.medst import MedST

from medst.errors import MedstError, UserInputError
from medst.inference.encoder import MedSTEncoder
from medst.inference.settings import PreprocessSettings, settings_from_config

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class ModelLoadError(UserInputError):
    """A model folder that cannot be used: missing files, config and weights that disagree, or pickled code."""


@dataclass
class ModelSource:
    """Where the pieces of one model live. ``kind``: ``export``, ``checkpoint`` or ``weights``."""

    kind: Literal["export", "checkpoint", "weights"]
    folder: Path
    weights: Path


def _latest_checkpoint(run: Path) -> Path | None:
    from medst.model.checkpoints import find_latest

    return find_latest(run)


def find_model(path: str | Path, checkpoint: str | None = None) -> ModelSource:
    """Resolve ``path`` to a model; ``checkpoint="latest"`` prefers a run's newest checkpoint over its export.

    Raises `ModelLoadError` saying what was looked for when ``path`` holds no model.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{p}: no such file or folder (give an exported model folder or a run folder)")
    if p.is_file():
        if p.suffix == ".safetensors" or p.suffix.lower() in TORCH_SUFFIXES:
            return ModelSource("weights", p.parent, p)
        raise ModelLoadError(f"{p}: not a model file (expected .safetensors, or a folder)")
    if (p / "trainer.json").is_file() and (p / WEIGHTS_FILE).is_file() and (p / "config.yaml").is_file():
        return ModelSource("checkpoint", p, p / WEIGHTS_FILE)
    if (p / WEIGHTS_FILE).is_file():
        return ModelSource("export", p, p / WEIGHTS_FILE)
    export = p / "export"
    latest = _latest_checkpoint(p) if (p / "checkpoints").is_dir() else None
    if checkpoint == "latest" and latest is not None:
        return ModelSource("checkpoint", latest, latest / WEIGHTS_FILE)
    if (export / WEIGHTS_FILE).is_file():
        return ModelSource("export", export, export / WEIGHTS_FILE)
    if latest is not None:
        return ModelSource("checkpoint", latest, latest / WEIGHTS_FILE)
    torch_files = sorted(f for f in p.iterdir() if f.suffix.lower() in TORCH_SUFFIXES)
    if len(torch_files) == 1 and (p / CONFIG_FILE).is_file():
        return ModelSource("weights", p, torch_files[0])
    raise ModelLoadError(
        f"{p}: no model found (looked for {WEIGHTS_FILE}, export/{WEIGHTS_FILE} and checkpoints/step-*/); "
        "give a folder written by `medst pretrain` or `medst.model.io.save_model`"
    )


def read_torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a torch-saved state dict, loaded with ``weights_only=True`` (never runs pickled code).

    A file whose pickle holds anything but tensors and plain containers (a ``__reduce__`` payload, a whole
    module object, custom classes) is refused with `ModelLoadError` before any of its code can run.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            f"refusing {path}: it is not a plain tensor file, so it was not unpickled "
            f"(torch.load weights_only refused it: {first[:200]}); export the model as safetensors "
            "with medst.model.io.save_model"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"refusing {path}: expected a state dict of tensors, found {type(obj).__name__}")
    return {str(k): v for k, v in obj.items()}


def check_state(model: nn.Module, state: dict[str, torch.Tensor], weights: Path, config: Path) -> None:
    """Raise `ModelLoadError` naming missing keys, unexpected keys and shape mismatches between ``state`` and
    the model built from ``config`` (nothing is loaded when they disagree)."""
    from medst.model.io import state_mismatch

    mismatch = state_mismatch(model, state)
    if mismatch:
        raise ModelLoadError(f"{weights} does not match {config}: {mismatch}")


def _load_export(src: ModelSource) -> tuple[MedST, Any, PreprocessSettings]:
    from medst.model.config import ModelConfig
    from medst.model.io import load_model, load_tokenizer, read_model_meta
    from medst.model.medst import MedST
    from medst.model.text import backbone_from_hf_config

    folder = src.folder
    if not (folder / CONFIG_FILE).is_file():
        raise ModelLoadError(
            f"{folder}: no {CONFIG_FILE} beside the weights (it says how to build the model)"
        )
    if src.weights.suffix.lower() in TORCH_SUFFIXES:
        state = read_torch_weights(src.weights)
        meta = json.loads((folder / CONFIG_FILE).read_text())
        try:
            config = ModelConfig.model_validate(meta["model_config"])
            model = MedST(config, text_model=backbone_from_hf_config(meta["text_backbone_config"]))
        except (KeyError, ValueError) as err:
            raise ModelLoadError(f"{folder / CONFIG_FILE}: not a usable medst model config ({err})") from err
        check_state(model, state, src.weights, folder / CONFIG_FILE)
        model.load_state_dict(state, strict=True)
    else:
        from safetensors import SafetensorError

        try:
            meta = read_model_meta(folder)
            model = load_model(
                folder, "cpu"
            )  # strict: names the missing/unexpected keys and shape mismatches
        except (MedstError, ValueError, KeyError, SafetensorError) as err:
            raise ModelLoadError(str(err)) from err
    try:
        tokenizer = load_tokenizer(folder)
    except (MedstError, OSError, ValueError) as err:
        raise ModelLoadError(f"{folder}: no usable tokenizer ({err})") from err
    cfg = model.config
    return (
        model,
        tokenizer,
        settings_from_config(_with_shard_options(meta), cfg.image_size, cfg.text.max_length),
    )


def _with_shard_options(meta: dict[str, Any]) -> dict[str, Any]:
    """When the export does not record its preprocessing, take the intensity preset and stored image size from
    the training shards' ``summary.json`` if they are still where the run config says."""
    raw = meta.get("extra")
    extra: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if (
        "preprocess" in extra
        or "shard_options" in extra
        or not isinstance(extra.get("pretrain_config"), dict)
    ):
        return meta
    shards = extra["pretrain_config"].get("shards")
    summary = Path(str(shards)) / "summary.json" if shards else None
    if summary is None or not summary.is_file():
        return meta
    try:
        options = json.loads(summary.read_text()).get("options", {})
    except (OSError, ValueError):
        return meta
    return {**meta, "extra": {**extra, "shard_options": options}}


def _load_checkpoint(src: ModelSource) -> tuple[MedST, Any, PreprocessSettings]:
    import yaml
    from safetensors.torch import load_file

    from medst.model.building import build_model, load_tokenizer
    from medst.schemas.train import PretrainConfig

    folder = src.folder
    try:
        run_config = PretrainConfig.model_validate(yaml.safe_load((folder / "config.yaml").read_text()))
    except (ValueError, yaml.YAMLError) as err:
        raise ModelLoadError(f"{folder / 'config.yaml'}: not a readable run config ({err})") from err
    run_dir = folder.parent.parent
    text_path = run_config.text_model if run_config.text_model is not None else run_dir / "text_model"
    if not (Path(text_path) / "config.json").is_file():
        raise ModelLoadError(
            f"{folder}: the run's text model folder {text_path} is missing (needed for a checkpoint)"
        )
    init = run_config.model_copy(update={"init_image": None})
    from transformers.utils import logging as hf_logging

    # The text backbone is built from its folder and then overwritten by the checkpoint: its load report (an
    # unused pooler, say) is noise here.
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = build_model(init, Path(text_path))
    finally:
        hf_logging.set_verbosity(level)
    state = load_file(str(src.weights))
    check_state(model, state, src.weights, folder / "config.yaml")
    model.load_state_dict(state, strict=True)
    tokenizer = load_tokenizer(Path(text_path))
    meta: dict[str, Any] = {"extra": {}}
    summary = Path(run_config.shards) / "summary.json"
    if summary.is_file():
        meta["extra"]["shard_options"] = json.loads(summary.read_text()).get("options", {})
    cfg = model.config
    return model, tokenizer, settings_from_config(meta, cfg.image_size, cfg.text.max_length)


def _research_state(src: ModelSource) -> dict[str, torch.Tensor] | None:
    """The tensors of a torch file in the authors' layout, else None (our own formats go their usual way)."""
    from medst.model.reference import is_reference_layout

    if src.kind != "weights" or src.weights.suffix.lower() not in TORCH_SUFFIXES:
        return None
    state = read_torch_weights(src.weights)
    return state if is_reference_layout(state) else None


def _load_research(
    src: ModelSource, state: dict[str, torch.Tensor], text_model: str | Path | None
) -> tuple[MedST, Any, PreprocessSettings]:
    from medst.model.io import load_tokenizer
    from medst.model.reference import build_reference_model

    if text_model is None:
        raise ModelLoadError(
            f"{src.weights} is a checkpoint of the authors' research code: give text_model= the local folder of "
            "the BERT its text encoder was built from (Bio_ClinicalBERT: config.json and tokenizer files)"
        )
    folder = Path(text_model).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"text_model {folder}: no config.json (give a local Hugging Face BERT folder)")
    try:
        hf_config = json.loads((folder / "config.json").read_text())
        model, report = build_reference_model(state, hf_config)
        tokenizer = load_tokenizer(folder)
    except (MedstError, ValueError, OSError) as err:
        raise ModelLoadError(f"{src.weights}: {err}") from err
    logger.info("%s: %s", src.weights, report.summary())
    cfg = model.config
    return model, tokenizer, settings_from_config({"extra": {}}, cfg.image_size, cfg.text.max_length)


def pick_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load(
    path: str | Path,
    device: str | torch.device | None = None,
    *,
    precision: Precision = "auto",
    checkpoint: str | None = None,
    preset: str | None = None,
    workers: int = 0,
    text_model: str | Path | None = None,
) -> MedSTEncoder:
    """Load a trained Med-ST model for inference (see the module docstring for accepted paths).

    Args:
        device: ``None`` = CUDA if available, else CPU.
        precision: ``auto`` = bf16 autocast on CUDA, float32 on CPU.
        checkpoint: ``"latest"`` loads a run's newest checkpoint even when it has an export.
        preset: override the recorded intensity preset for DICOM files (``mimic-jpg`` or ``voi``).
        workers: threads that decode images in parallel (0 = in the calling thread).
        text_model: for a checkpoint of the authors' research code only: the local BERT folder (tokenizer and
            config) its text encoder was built from; the tensors it holds that Med-ST does not use are logged.
    Raises `ModelLoadError` (a `UserInputError`) when files are missing, config and weights disagree, or a file
    would need unpickling.
    """
    src = find_model(path, checkpoint)
    research = _research_state(src)
    if research is not None:
        model, tokenizer, settings = _load_research(src, research, text_model)
    elif src.kind == "checkpoint":
        model, tokenizer, settings = _load_checkpoint(src)
    else:
        model, tokenizer, settings = _load_export(src)
    if preset is not None:
        settings = PreprocessSettings.model_validate(
            {**settings.model_dump(), "preset": preset, "recorded": True}
        )
    temperature = float(model.config.temperatures.global_)
    return MedSTEncoder(
        model,
        tokenizer,
        settings,
        pick_device(device),
        precision=precision,
        source=src.folder,
        temperature=temperature,
        workers=workers,
        weights=src.weights,
    )
