"""Frozen features for evaluation, computed once per checkpoint and cached on disk.

All features come from the inference API (`medst.load(...)` -> an encoder with ``encode_images`` and
``encode_texts``), so `medst embed` and `medst eval` agree. The cache holds safetensors files under
``<cache_dir>/<model fingerprint>/<kind>/part-NNNNN.safetensors``, each with one ``features`` tensor ``[n, d]``
and, in its metadata, the JSON list of the ``n`` row keys. An image key is the sha1 of its resolved path, size,
modification time and the intensity preset; a text key is the sha1 of the text. A different model has a
different fingerprint, hence a different folder: changing the model invalidates the cache by construction.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from medst.errors import ImageDecodeError
from medst.progress import progress


class Encoder(Protocol):
    """What evaluation needs from a loaded model (the inference API of `medst.load`)."""

    def encode_images(
        self, frontal: Any, lateral: Any = None, batch_size: int = ..., features: str = ...
    ) -> Any: ...

    def encode_texts(self, texts: list[str]) -> Any: ...


def model_fingerprint(encoder: Any) -> str:
    """A sha256 hex digest identifying the encoder's weights.

    Uses the encoder's own ``fingerprint`` / ``weights_sha256`` attribute when it has one, else hashes every
    tensor of the underlying module's state dict (names, shapes, dtypes and bytes).
    """
    for attr in ("fingerprint", "weights_sha256"):
        value = getattr(encoder, attr, None)
        if isinstance(value, str) and value:
            return value
    module = encoder if isinstance(encoder, torch.nn.Module) else getattr(encoder, "model", None)
    if not isinstance(module, torch.nn.Module):
        raise TypeError("cannot fingerprint the encoder: no 'fingerprint' attribute and no torch module")
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _settings_key(encoder: Any) -> str:
    settings = getattr(encoder, "settings", None)
    dump = getattr(settings, "model_dump_json", None)
    if callable(dump):
        return str(dump())
    return repr(settings) if settings is not None else "default"


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def image_key(path: Path, preprocess_key: str) -> str:
    """sha1 of the resolved path, size, mtime and the preprocessing (intensity preset, sizes)."""
    st = path.stat()
    raw = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{preprocess_key}"
    return hashlib.sha1(raw.encode("utf-8")).hexdigest()


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class FeatureStore:
    """One kind of cached feature rows (e.g. global image features under one preset) for one model."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.rows: dict[str, np.ndarray] = {}
        if folder is not None and folder.is_dir():
            for part in sorted(folder.glob("part-*.safetensors")):
                from safetensors import safe_open

                with safe_open(str(part), framework="numpy") as f:
                    keys = json.loads((f.metadata() or {}).get("keys", "[]"))
                feats = load_file(str(part))["features"]
                self.rows.update(zip(keys, feats, strict=True))

    def add(self, keys: list[str], feats: np.ndarray) -> None:
        """Keep ``feats`` (``[len(keys), d]``) and write them as one new part file (atomic rename)."""
        self.rows.update(zip(keys, feats, strict=True))
        if self.folder is None or not keys:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        n = len(list(self.folder.glob("part-*.safetensors")))
        target = self.folder / f"part-{n:05d}-{os.getpid()}.safetensors"
        tmp = target.with_suffix(".tmp")
        save_file(
            {"features": np.ascontiguousarray(feats, dtype=np.float32)},
            str(tmp),
            metadata={"keys": json.dumps(keys)},
        )
        tmp.replace(target)


class FeatureExtractor:
    """Batched, cached feature computation for one encoder.

    Attributes:
        encoded_images / encoded_texts: how many images / texts were actually sent through the encoder
            (cache misses), so callers and tests can see the cache work.
        rejects: ``"path: reason"`` for every image that could not be decoded (its feature row is NaN).
    """

    def __init__(
        self,
        encoder: Any,
        cache_dir: Path | None,
        batch_size: int = 32,
        preprocess_key: str | None = None,
        progress: bool = True,
        fingerprint: str | None = None,
    ) -> None:
        self.encoder = encoder
        self.fingerprint = fingerprint or model_fingerprint(encoder)
        self.batch_size = batch_size
        # Part of every image key: the encoder's preprocessing (intensity preset, letterbox, crop).
        self.preprocess_key = preprocess_key or _settings_key(encoder)
        self.progress = progress
        self.root = None if cache_dir is None else cache_dir / self.fingerprint[:16]
        self._stores: dict[str, FeatureStore] = {}
        self.encoded_images = 0
        self.encoded_texts = 0
        self.rejects: list[str] = []

    def _store(self, kind: str) -> FeatureStore:
        if kind not in self._stores:
            self._stores[kind] = FeatureStore(None if self.root is None else self.root / kind)
        return self._stores[kind]

    def _encode_image_batch(self, paths: list[Path], features: str) -> np.ndarray:
        with torch.inference_mode():
            return _to_numpy(
                self.encoder.encode_images(list(paths), batch_size=self.batch_size, features=features)
            )

    def images(self, paths: Sequence[Path], features: str = "global") -> np.ndarray:
        """``[len(paths), d]`` float32 frontal-image features (``features`` = 'global' or 'cls').

        Images that fail to decode get a NaN row and an entry in ``rejects``; callers drop those rows.
        """
        store = self._store(f"image-{features}")
        keys = [image_key(Path(p), self.preprocess_key) for p in paths]
        todo = sorted({k: Path(p) for k, p in zip(keys, paths, strict=True) if k not in store.rows}.items())
        chunk = max(self.batch_size * 8, 1)
        bar = progress(
            total=len(todo), desc=f"encode images ({features})", enabled=self.progress and bool(todo)
        )
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            new_keys, new_paths = [k for k, _ in part], [p for _, p in part]
            try:
                feats = self._encode_image_batch(new_paths, features)
            except ImageDecodeError:
                feats = self._encode_one_by_one(new_paths, features)
            self.encoded_images += len(new_paths)
            store.add(new_keys, feats)
            bar.update(len(part))
        bar.close()
        return np.stack([store.rows[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def _encode_one_by_one(self, paths: list[Path], features: str) -> np.ndarray:
        rows: list[np.ndarray | None] = []
        for p in paths:
            try:
                rows.append(self._encode_image_batch([p], features)[0])
            except ImageDecodeError as err:
                self.rejects.append(f"{p}: {err.reason}")
                rows.append(None)
        dim = next((r.shape[0] for r in rows if r is not None), 1)
        return np.stack([r if r is not None else np.full(dim, np.nan, np.float32) for r in rows])

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), d]`` float32 global text features (the encoder applies training text cleaning)."""
        store = self._store("text-global")
        keys = [text_key(t) for t in texts]
        todo = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in store.rows}.items())
        if todo:
            with torch.inference_mode():
                feats = _to_numpy(self.encoder.encode_texts([t for _, t in todo]))
            self.encoded_texts += len(todo)
            store.add([k for k, _ in todo], feats)
        return np.stack([store.rows[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
