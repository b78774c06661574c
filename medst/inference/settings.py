"""How an exported model wants its inputs prepared: the intensity preset and the image/text options of training.

The trainer records these next to the weights (``config.json``, key ``preprocess``); a model folder that does not
record them gets the paper's defaults (``mimic-jpg`` preset, letterbox 256, centre crop 224, 112 tokens), scaled to
the model's input size for models trained at another size.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medst.schemas.common import IntensityPreset as Preset

# The paper's geometry: letterbox to 256, crop 224. A model with another input size keeps the same ratio.
PAPER_LETTERBOX = 256
PAPER_CROP = 224
PAPER_MAX_TOKENS = 112


class PreprocessSettings(BaseModel):
    """The preprocessing an encoder applies; equal to what the model saw at evaluation time in training."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    preset: Preset = Field(
        default="mimic-jpg", description="DICOM intensity preset (JPG/PNG are read as they are)"
    )
    letterbox: int = Field(
        default=PAPER_LETTERBOX, ge=8, description="longest side after resize, then zero pad"
    )
    crop: int = Field(
        default=PAPER_CROP, ge=8, description="centre crop side, pixels (the model's input size)"
    )
    max_tokens: int = Field(default=PAPER_MAX_TOKENS, ge=4, description="token length of one text")
    stored_size: int | None = Field(
        default=None,
        description="longest side images were stored at in the shards (resized to first), if known",
    )
    recorded: bool = Field(
        default=True, description="False when the model folder did not record these settings"
    )


def _block(source: Any, *path: str) -> dict[str, Any]:
    for key in path:
        source = source.get(key) if isinstance(source, dict) else None
    return source if isinstance(source, dict) else {}


def settings_from_config(meta: dict[str, Any], image_size: int, max_length: int) -> PreprocessSettings:
    """The preprocessing recorded in an exported model's ``config.json`` (parsed), else the training defaults.

    Read, first found wins: ``extra.preprocess`` (the fields of `PreprocessSettings`); the shard options the model
    was trained on, ``extra.data.options`` or ``extra.shard_options`` (``preset`` -> preset, ``image_size`` ->
    stored_size). Missing values are what the trainer uses: crop = the model's input size, letterbox =
    ``max(crop, round(crop * 256 / 224))``, max_tokens = the text encoder's max length, preset ``mimic-jpg``.
    ``recorded`` is False when no intensity preset was recorded (the default was assumed).
    """
    extra = _block(meta, "extra")
    values: dict[str, Any] = {}
    for key, value in _block(extra, "preprocess").items():
        if key in PreprocessSettings.model_fields and key != "recorded" and value is not None:
            values[key] = value
    options = _block(extra, "data", "options") or _block(extra, "shard_options")
    if "preset" not in values and options.get("preset") is not None:
        values["preset"] = options["preset"]
    if "stored_size" not in values and options.get("image_size") is not None:
        values["stored_size"] = options["image_size"]
    recorded = "preset" in values
    crop = int(values.get("crop", image_size))
    values["crop"] = crop
    values.setdefault("letterbox", max(crop, round(crop * PAPER_LETTERBOX / PAPER_CROP)))
    values.setdefault("max_tokens", max_length)
    return PreprocessSettings(**values, recorded=recorded)
