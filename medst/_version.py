"""The installed medst version, in a module of its own so that any stage can record it without importing the
package root (which exposes `medst.load`, the inference stage)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medst")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
