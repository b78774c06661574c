"""Configuration and summary of `medst synth` (the synthetic MIMIC-CXR-shaped archive generator)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from medst.schemas.common import EngineName

Release = Literal["dicom", "jpg", "both"]


class SynthConfig(BaseModel):
    """Options of one synthetic archive. The same options give the same bytes."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="output folder (created; must be empty or absent)")
    patients: int = Field(default=200, ge=1, le=2_000_000, description="number of patients (subjects)")
    seed: int = Field(
        default=0, ge=0, description="random seed; everything written depends only on the options"
    )
    image_size: int = Field(
        default=512,
        ge=64,
        le=4096,
        description="long side of each image the synthetic archive holds (its DICOM/JPG pixels), in pixels",
    )
    release: Release = Field(
        default="dicom",
        description="'dicom': DICOM tree + reports; 'jpg': MIMIC-CXR-JPG tree (reports under OUT/reports/); "
        "'both': DICOM tree at OUT and the JPG release under OUT/jpg/",
    )
    benchmarks: bool = Field(default=False, description="also write MS-CXR-T, RSNA and COVIDx style sets")
    metadata_only: bool = Field(default=False, description="CSVs, reports and truth only, no pixel files")
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="worker processes writing reports and rendering images (Ray CPUs with a local --engine ray); "
        "the output does not change",
    )
    engine: EngineName = Field(
        default="local", description="the engine the jobs run on (same bytes on every engine)"
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster address (default: start a local Ray); every node must see OUT"
    )


class SynthSummary(BaseModel):
    """What `medst.synth.generate` wrote."""

    out: Path
    patients: int
    studies: int
    images: int
    reports: int
    bytes: int
    seconds: float
    paths: dict[str, Path]
