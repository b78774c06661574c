"""Configuration and result of `medst demo` (every stage on a small synthetic archive)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class DemoConfig(BaseModel):
    """Sizes of the demo; the defaults finish in a few minutes on a 2-core laptop."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(default=Path("demo_out"), description="folder for every stage's output")
    # Enough studies (~2000 training studies) for a tiny model to learn findings rather than memorise pairs; at
    # 128 px the images stay above the demo model's 110 px letterbox and synth stays fast.
    patients: int = Field(default=600, ge=8, description="synthetic patients")
    image_size: int = Field(
        default=128,
        ge=64,
        description="long side of the synthetic archive's images, and the longest side stored in the shards, in "
        "pixels",
    )
    steps: int | None = Field(default=None, ge=1, description="training steps (default: the demo preset's)")
    lambda2: float | None = Field(default=None, ge=0, description="weight of the temporal loss (default 1)")
    seed: int = Field(default=0, description="random seed of every stage")
    workers: int = Field(default=2, ge=1, description="processes for synth, build and shard")
    bootstrap: int = Field(default=200, ge=0, description="bootstrap resamples per metric")
    progress: bool = True


class DemoResult(BaseModel):
    """What `medst.demo.run_demo` returns: the results table, the pictures and the time per stage."""

    out: Path
    seconds: dict[str, float]
    table: str
    pictures: list[Path]
    zero_shot: str
