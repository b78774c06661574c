"""medst: Med-ST spatial and temporal vision-language pre-training on chest X-rays, as a usable tool."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medst")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
