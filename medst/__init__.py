"""medst: Med-ST spatial and temporal vision-language pre-training on chest X-rays, as a usable tool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medst._version import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from medst.inference.encoder import MedSTEncoder

__all__ = ["__version__", "load"]


def load(path: str | Path, device: Any = None, **options: Any) -> MedSTEncoder:
    """Load a trained Med-ST model (run folder or exported model folder) for inference.

    Returns a `medst.inference.MedSTEncoder`; see `medst.inference.load` for the options. Imported lazily so that
    ``import medst`` stays light (no torch).
    """
    from medst.inference import load as _load

    return _load(path, device, **options)
