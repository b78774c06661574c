"""Using a trained Med-ST model: `load` a model folder, then embed images and texts with the `MedSTEncoder`.

import medst
enc = medst.load("run/")                       # run folder or exported model folder
img = enc.encode_images(["a.dcm", "b.jpg"])    # [2, 128] normalised
txt = enc.encode_texts(["no pneumothorax"])    # [1, 128] normalised
enc.similarity(img, txt)                       # cosines [2, 1]
"""

from medst.inference.encoder import Embeddings, LocalFeatures, MedSTEncoder, ZeroShotResult
from medst.inference.loading import ModelLoadError, find_model, load
from medst.inference.settings import PreprocessSettings

__all__ = [
    "Embeddings",
    "LocalFeatures",
    "MedSTEncoder",
    "ModelLoadError",
    "PreprocessSettings",
    "ZeroShotResult",
    "find_model",
    "load",
]
