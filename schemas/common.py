"""Choices that several configs and stages share, each declared once; every other module imports it from here,
so the values a config validates, the CLI lists and a function accepts cannot drift apart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from medst.executors import ENGINES

Compat = Literal["clean", "reference"]
"""Which arithmetic: ``reference`` reproduces the authors' code and data rows (SPEC section 6), ``clean`` fixes
their quirks."""

LateralInit = Literal["random", "copy"]
"""How the lateral view encoder starts: random weights, or a copy of the frontal encoder's."""

IntensityPreset = Literal["mimic-jpg", "voi"]
"""How a DICOM's stored values become display pixels: MIMIC-CXR-JPG's recipe, or the DICOM VOI LUT/window."""

Precision = Literal["auto", "bf16", "fp32"]
"""Arithmetic of the forward pass: ``auto`` is bf16 autocast on CUDA and fp32 on the CPU."""

if TYPE_CHECKING:
    EngineName = str
else:
    # Made from the registry, so an engine added to `ENGINES` is a valid config value and a `--engine` choice
    # at once; a Literal keeps pydantic's one-line "Input should be ..." message and the JSON schema's enum.
    EngineName = Literal[tuple(ENGINES)]
"""Where a stage's jobs run: a name in `medst.executors.ENGINES` (the same bytes on every engine)."""
