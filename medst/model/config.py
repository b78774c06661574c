"""The model's configuration, re-exported from `medst.schemas.model` where it lives (a training config nests it,
and schemas may not import the model package)."""

from __future__ import annotations

from medst.schemas.common import Compat
from medst.schemas.model import ModelConfig, Temperatures, TextConfig

__all__ = ["Compat", "ModelConfig", "Temperatures", "TextConfig"]
