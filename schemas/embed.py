"""Configuration and summary of `medst embed` (images and/or text lines -> vectors in a Parquet file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medst.schemas.common import EngineName, IntensityPreset


class EmbedConfig(BaseModel):
    """Everything `medst.inference.embed.embed` needs; the CLI builds one from its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str | None = Field(
        default=None,
        description="images: a folder, a glob, a build-sequences output (folder or studies/images.parquet) or a "
        "shard folder",
    )
    out: Path = Field(description="output Parquet file (written atomically)")
    model: Path = Field(default=Path("run"), description="run folder or exported model folder")
    text: Path | None = Field(default=None, description="text file: every line is embedded")
    batch_size: int = Field(default=32, ge=1, description="images or texts per forward pass")
    preset: IntensityPreset | None = Field(
        default=None, description="DICOM intensity preset (default: the one recorded with the model)"
    )
    image_root: Path | None = Field(
        default=None,
        description="manifest input: folder the image paths are relative to (default: build_report.json)",
    )
    frontal_only: bool = Field(
        default=False, description="ignore lateral images (a folder's laterals are left out, not paired)"
    )
    split: str | None = Field(default=None, description="manifest/shard input: only this split")
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1 ...; default: CUDA if available")
    threads: int = Field(default=2, ge=0, description="threads decoding images (in each worker process)")
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="worker processes, each loading the model once and embedding batches (Ray CPUs with a local "
        "--engine ray); 1 with the local engine embeds in this process. The vectors do not change",
    )
    engine: EngineName = Field(
        default="local",
        description="the engine batches run on with more than one worker (a Ray task asks Ray for one CPU and "
        "no GPU)",
    )
    ray_address: str | None = Field(default=None, description="Ray cluster address; None starts a local Ray")
    progress: bool = True

    @model_validator(mode="after")
    def _something(self) -> EmbedConfig:
        if self.input is None and self.text is None:
            raise ValueError("give INPUT (images) and/or --text FILE")
        if self.ray_address is not None and self.engine != "ray":
            raise ValueError("--ray-address is only used with --engine ray")
        return self


class EmbedSummary(BaseModel):
    """What one `medst.inference.embed.embed` call did."""

    out: Path
    images: int = 0
    image_errors: int = 0
    texts: int = 0
    text_errors: int = 0
    image_seconds: float = 0.0
    errors_by_reason: dict[str, int] = Field(default_factory=dict)
    skipped_files: list[str] = Field(default_factory=list)
    warnings_by_reason: dict[str, int] = Field(default_factory=dict)
    images_flagged: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.image_seconds if self.image_seconds > 0 else 0.0
