"""model stage: MoVE ViT, text encoder wrapper, heads, the Med-ST module, weight loading and export."""

from medst.model.config import ModelConfig, Temperatures, TextConfig
from medst.model.medst import ImageFeatures, MedST, MedSTOutput, TextFeatures

__all__ = [
    "ImageFeatures",
    "MedST",
    "MedSTOutput",
    "ModelConfig",
    "Temperatures",
    "TextConfig",
    "TextFeatures",
]
