"""Model configuration: shapes, temperatures, loss weights and the compat switch, as data (SPEC §2-3, §6).

`PretrainConfig.model` nests one; `medst.model.config` re-exports it for the model package.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medst.schemas.common import Compat, LateralInit


class TextConfig(BaseModel):
    """The text encoder: a local Hugging Face folder (``path``), or a randomly initialised BERT of the given size."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    vocab_size: int = Field(30522, ge=8)
    hidden: int = Field(768, ge=8)
    layers: int = Field(12, ge=1)
    heads: int = Field(12, ge=1)
    intermediate: int = Field(3072, ge=8)
    max_position_embeddings: int = Field(512, ge=2)
    # The paper keeps the first 6 layers of Bio_ClinicalBERT; None keeps all of them.
    num_layers: int | None = Field(6, ge=1)
    max_length: int = Field(112, ge=4)

    @model_validator(mode="after")
    def _check(self) -> TextConfig:
        if self.path is None and self.hidden % self.heads:
            raise ValueError(f"text hidden {self.hidden} is not divisible by text heads {self.heads}")
        if self.max_length > self.max_position_embeddings:
            raise ValueError("text max_length exceeds max_position_embeddings")
        return self


class Temperatures(BaseModel):
    """Softmax temperatures of the three losses (SPEC §3)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    global_: float = Field(0.07, gt=0, alias="global")
    local: float = Field(0.1, gt=0)
    temporal: float = Field(0.1, gt=0)


class ModelConfig(BaseModel):
    """Everything needed to build a :class:`medst.model.MedST` (shapes, losses, quirk switch).

    ``compat="reference"`` reproduces the authors' numbers (SPEC §6), ``"clean"`` (default) fixes their quirks.
    """

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(
        224,
        ge=8,
        description="side of the square image the ViT takes, in pixels: the crop after the letterbox (224 in "
        "the paper); a multiple of patch_size. Not the size stored in the shards (ShardConfig.image_size)",
    )
    patch_size: int = Field(16, ge=1)
    in_channels: int = Field(3, ge=1)
    width: int = Field(768, ge=8)
    depth: int = Field(12, ge=1)
    heads: int = Field(12, ge=1)
    mlp_ratio: float = Field(4.0, gt=0)
    ln_eps: float = Field(1e-6, gt=0)
    proj_dim: int = Field(128, ge=2)
    proj_hidden: int = Field(2048, ge=2)
    text: TextConfig = Field(default_factory=TextConfig)
    temperatures: Temperatures = Field(default_factory=Temperatures)
    lambda1: float = Field(1.0, ge=0, description="weight of the local alignment loss")
    lambda2: float = Field(1.0, ge=0, description="weight of the temporal loss")
    seq_len: int = Field(
        4,
        ge=2,
        description="sequence length T of the temporal loss (reference: only windows of exactly T count); in a "
        "training run, set from the run's seq_len",
    )
    rmr_variance_lambda: float = Field(0.001, ge=0)
    compat: Compat = Field(
        "clean", description="loss arithmetic as the authors' code (reference) or corrected (clean)"
    )
    lateral_init: LateralInit = Field(
        "random", description="start of the lateral view encoder: random, or a copy of the frontal one"
    )
    grad_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass (less memory, more time)"
    )
    # Clean option (SPEC §3): studies of the same window with identical token ids are not each other's negatives.
    mask_duplicate_reports: bool = True
    # Clean option (SPEC §3): negatives from every GPU of the run, not only this GPU's batch.
    gather_negatives: bool = Field(
        False, description="gather embeddings across ranks so the global loss sees every rank's negatives"
    )
    # Detach the learned word/patch weights (alpha, beta) from the loss. Off in both modes: detaching would leave
    # the two weighting layers without any gradient (never trained, and unused parameters under DDP).
    detach_local_weights: bool = False

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        return self

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches of one view (196 for ViT-B/16 at 224)."""
        return self.grid * self.grid

    @classmethod
    def preset(cls, name: str, **overrides: object) -> ModelConfig:
        """``"paper"``: ViT-B/16 + 6-layer BERT-base sized text encoder; ``"tiny"``: trains on a CPU in minutes."""
        if name == "paper":
            base: dict[str, object] = {}
        elif name == "tiny":
            base = {
                "image_size": 96,
                "patch_size": 16,
                "width": 64,
                "depth": 2,
                "heads": 2,
                "proj_dim": 64,
                "proj_hidden": 256,
                "text": TextConfig(
                    vocab_size=2000,
                    hidden=64,
                    layers=2,
                    heads=2,
                    intermediate=256,
                    num_layers=None,
                    max_length=64,
                ),
            }
        else:
            raise ValueError(f"unknown model preset {name!r} (known: paper, tiny)")
        base.update(overrides)
        return cls.model_validate(base)
