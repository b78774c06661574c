"""Configs of the shard stage (`medst shard`) and of the streaming loader, and the shard index records."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medst.schemas.common import Compat, EngineName, IntensityPreset
from medst.storage import Location, OptionalLocation

DEFAULT_KEY_SALT = "medst-v1"
PLAN_FILE = "plan.json"


class ShardConfig(BaseModel):
    """Everything `write_shards` needs; the CLI builds one from its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: Path = Field(description="build-sequences output folder (studies.parquet + build_report.json)")
    out: Location = Field(
        description="output folder for shards, index/, summary.json, rejects.parquet: a path, or an object "
        "store URL (s3://...) that a local staging folder is uploaded to"
    )
    staging: Path | None = Field(
        default=None,
        description="with a URL `out`: the local folder the shards are built in before the upload (kept, so a "
        "re-run resumes); default: a folder named after the URL under the system's temporary folder",
    )
    image_root: OptionalLocation = Field(
        default=None,
        description="folder (or archive URL, s3://...) that frontal_path/lateral_path are relative to; default "
        "from build_report.json",
    )
    image_size: int = Field(
        default=512,
        ge=16,
        le=8192,
        description="longest side of each image stored in the shards, in pixels (the archive image is resized "
        "to it; the loader later letterboxes and crops it to the model's image_size)",
    )
    preset: IntensityPreset = Field(default="mimic-jpg", description="DICOM intensity preset")
    format: Literal["jpg", "png"] = Field(default="jpg", description="stored image format")
    jpeg_quality: int = Field(default=95, ge=50, le=100)
    samples_per_shard: int = Field(default=256, ge=1, description="patient timelines per shard (at most)")
    workers: int = Field(default=1, ge=1, description="worker processes (Ray CPUs with a local --engine ray)")
    engine: EngineName = Field(
        default="local", description="the engine shard jobs run on (same bytes on every engine)"
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster address (default: start a local Ray)"
    )
    part: tuple[int, int] = Field(
        default=(0, 1),
        description="i/n: build only part i (0-based) of n disjoint parts, the shards j with j % n == i",
    )
    force: bool = Field(
        default=False, description="rebuild complete shards too, and replace shards of another input"
    )
    key_salt: str = Field(default=DEFAULT_KEY_SALT, description="salt of the pseudonymous patient/study keys")
    shard_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="seconds one shard may take in a worker before the worker counts as stuck (killed, the "
        "shard retried once)",
    )
    min_kept: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="exit with an error (after writing) when the part keeps less than this share of studies "
        "(0 to 1)",
    )

    @field_validator("part")
    @classmethod
    def _part_in_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        i, n = value
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"part must be i/n with 0 <= i < n, got {i}/{n}")
        return value

    def options(self) -> dict[str, object]:
        """The options that change shard bytes (recorded in every index entry and in summary.json)."""
        return {
            "image_size": self.image_size,
            "preset": self.preset,
            "format": self.format,
            "jpeg_quality": self.jpeg_quality,
            "samples_per_shard": self.samples_per_shard,
            "key_salt": self.key_salt,
            # Bumped when decoding changes the pixels, so that a re-run rebuilds older shards instead of mixing
            # two decoders in one build (v2: large JPEGs, and JPEG 2000 DICOMs under `voi`, at reduced scale;
            # v3: flat displays fall back to a percentile window, blank and inconsistent DICOMs are rejected).
            "decode": 3,
        }


class ShardIndexEntry(BaseModel):
    """`index/{split}-{index:06d}.json`: written after the tar is renamed into place; the shard's completion mark."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shard: str = Field(description="tar file name, relative to the shard folder")
    split: str
    index: int
    samples: int
    studies: int
    images: int
    frontal: int
    lateral: int
    bytes: int
    sha256: str
    timeline_lengths: list[int] = Field(
        description="studies per sample, in tar order (the loader plans windows from it)"
    )
    medst_version: str
    options: dict[str, object]
    intensity_fallbacks: int = Field(
        default=0, description="images displayed through the percentile fallback window (flat preset output)"
    )
    input_fingerprint: str = Field(
        default="", description="fingerprint of the manifests the shard was built from ('' = not recorded)"
    )


class BuildOptions(BaseModel):
    """The `medst build-sequences` options the shards were made from (its build_report.json), carried forward so
    that training can take its window length T from the build and notice a compat mismatch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq_len: int = Field(ge=1, description="studies per window (T) of the build's sequences.parquet")
    stride: int = Field(ge=1, description="studies between window starts")
    min_len: int = Field(ge=1, description="shortest window kept")
    compat: Compat = Field(
        description="how the build made its time steps: clean studies or the authors' reference rows"
    )
    medst_version: str = Field(description="the medst that ran the build")


class ShardPlan(BaseModel):
    """`plan.json`: every shard of the dataset (all parts), the input it was planned from and the options.

    Every part of a build plans the same dataset, so every part writes the same plan: folders of parts built on
    several machines combine by copying them into one folder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    medst_version: str
    input_fingerprint: str = Field(description="sha256 of the input manifests (studies.parquet)")
    options: dict[str, object]
    shards: list[str] = Field(description="shard names (`{split}-{index:06d}`, no .tar), all parts")
    build: BuildOptions | None = Field(
        default=None,
        description="options of the build the input came from; None for a plan of an older medst or an input "
        "without a readable build_report.json",
    )


class ShardSummary(BaseModel):
    """`summary.json`: dataset-level totals over every complete shard in the folder."""

    model_config = ConfigDict(extra="forbid")

    medst_version: str
    options: dict[str, object]
    expected_shards: int
    complete_shards: int
    complete: bool
    built_now: int = Field(description="shards written by the run that wrote this summary")
    skipped_now: int = Field(description="complete shards the run found and kept")
    rejects: int
    splits: dict[str, dict[str, int]] = Field(
        description="split -> shards, samples, studies, images, frontal, lateral, bytes"
    )
    studies_with_lateral: int
    studies_frontal_only: int
    intensity_fallbacks: int = Field(
        default=0, description="images of complete shards displayed through the percentile fallback window"
    )


class LoaderConfig(BaseModel):
    """The streaming loader: which shards, how timelines become windows, image and text sizes, determinism."""

    model_config = ConfigDict(extra="forbid")

    shards: Location
    split: str = "train"
    seq_len: int = Field(default=4, ge=1)
    stride: int | None = Field(
        default=None, ge=1, description="None = seq_len (the paper's non-overlapping chunks)"
    )
    random_offset: bool = False
    min_len: int = Field(default=1, ge=1)
    windows_per_batch: int = Field(default=10, ge=1)
    letterbox: int = Field(
        default=256,
        ge=8,
        description="longest side after resizing a stored image, then zero-padded to a square",
    )
    crop: int = Field(
        default=224, ge=8, description="side of the random (train) or centre crop: the model's image_size"
    )
    train: bool = True
    max_tokens: int = Field(default=112, ge=3)
    seed: int = 0
    num_workers: int = Field(default=0, ge=0)
    pin_memory: bool = Field(
        default=False, description="page-lock batches in the workers' output thread (faster copies to a GPU)"
    )
    shuffle: bool = True
    drop_last: bool = True
    skip_bad_samples: bool = Field(
        default=False,
        description="leave damaged samples out of their batch (named in `Batch.skipped`) instead of raising",
    )

    @model_validator(mode="after")
    def _crop_fits(self) -> LoaderConfig:
        if self.crop > self.letterbox:
            raise ValueError(f"crop ({self.crop}) must not exceed letterbox ({self.letterbox})")
        if self.min_len > self.seq_len:
            raise ValueError(f"min_len ({self.min_len}) must not exceed seq_len ({self.seq_len})")
        return self

    @property
    def effective_stride(self) -> int:
        return self.stride if self.stride is not None else self.seq_len


def plan_build(shards: Location) -> BuildOptions | None:
    """The ``build`` block of a shard folder's `plan.json`: the build-sequences options its input was made with.

    None when the folder has no readable plan or the plan has no block (shards of an older medst, or of a table
    that no build-sequences wrote); the stages that need the plan itself report those problems in their own words.
    """
    path = shards / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return ShardPlan.model_validate_json(path.read_bytes()).build
    except ValueError:  # a damaged plan (pydantic's ValidationError is a ValueError)
        return None
