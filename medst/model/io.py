"""Export a Med-ST model as ``model.safetensors`` + ``config.json`` (+ tokenizer files) and load it back."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medst.errors import MedstError, UserInputError
from medst.model.config import ModelConfig
from medst.model.medst import MedST
from medst.model.text import backbone_from_hf_config

FORMAT = "medst-model"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("medst")
    except Exception:
        return "unknown"


def save_model(model: MedST, folder: Path | str, tokenizer: Any = None, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (model config, the text backbone's Hugging Face config,
    ``extra``) into ``folder``, plus the tokenizer files when a tokenizer is given. The folder is self-contained:
    loading it reads nothing else. Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT})
    tmp.replace(folder / WEIGHTS_FILE)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medst_version": _version(),
        "model_config": model.config.model_dump(mode="json"),
        "text_backbone_config": model.text.bert.config.to_dict(),
        "extra": extra or {},
    }
    tmp_cfg = folder / (CONFIG_FILE + ".tmp")
    tmp_cfg.write_text(json.dumps(meta, indent=2, sort_keys=True))
    tmp_cfg.replace(folder / CONFIG_FILE)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return folder


def read_model_meta(folder: Path | str) -> dict:
    """The parsed ``config.json`` of an exported model (raises :class:`UserInputError` when it is not one)."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise UserInputError(
            f"{folder} is not an exported medst model (needs {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise UserInputError(f"{path} is not a medst model config (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise MedstError(f"{path}: unsupported model format version {meta.get('format_version')}")
    return meta


def state_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    """How ``state`` differs from ``model``'s own state dict (missing keys, unexpected keys, other shapes), or
    None when it loads strictly. Names at most three examples of each."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} of another shape (e.g. {'; '.join(shapes[:3])})")
    return ", ".join(parts) or None


def load_model(folder: Path | str, device: torch.device | str = "cpu") -> MedST:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` strictly (eval mode, on ``device``).

    Raises :class:`MedstError` naming the keys or shapes that do not match the config.
    """
    folder = Path(folder)
    meta = read_model_meta(folder)
    try:
        config = ModelConfig.model_validate(meta["model_config"])
    except Exception as err:
        raise MedstError(f"{folder / CONFIG_FILE}: invalid model_config: {err}") from err
    model = MedST(config, text_model=backbone_from_hf_config(meta["text_backbone_config"]))
    state = load_file(str(folder / WEIGHTS_FILE))
    mismatch = state_mismatch(model, state)
    if mismatch:
        raise MedstError(f"{folder / WEIGHTS_FILE} does not match {CONFIG_FILE}: {mismatch}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def load_tokenizer(folder: Path | str) -> Any:
    """The tokenizer saved beside an exported model (``AutoTokenizer``, offline)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not (folder / "tokenizer_config.json").is_file():
        raise UserInputError(f"{folder} has no tokenizer files (export with a tokenizer)")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
