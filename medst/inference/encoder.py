"""`MedSTEncoder`: a loaded Med-ST model that embeds images and texts the way training saw them.

All outputs are float32 tensors on the CPU, one row per input, in input order. Global embeddings are
L2-normalised ``[N, proj_dim]`` (128 for the paper's model); CLS features are the encoders' final CLS states
``[N, width]`` (768); patch and word features come with their masks.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
import torch.nn.functional as F

from medst.schemas.common import Precision

if TYPE_CHECKING:
    from medst.model.medst import MedST

from medst.inference.images import ImageInput, as_image_list, prepare_image
from medst.inference.settings import PreprocessSettings
from medst.inference.texts import clean_for_model, tokenize_texts

ImageFeatureKind = Literal["global", "cls", "patches", "all"]
TextFeatureKind = Literal["global", "cls", "words", "all"]


@dataclass
class LocalFeatures:
    """Token-level features: ``features`` ``[N, T, proj_dim]`` (normalised) and ``mask`` ``[N, T]`` bool
    (True for a real patch / word; rows are padded to the longest item)."""

    features: torch.Tensor
    mask: torch.Tensor


@dataclass
class Embeddings:
    """Every feature of a set of inputs: ``embedding`` ``[N, proj_dim]``, ``cls`` ``[N, width]``, ``local``."""

    embedding: torch.Tensor
    cls: torch.Tensor
    local: LocalFeatures


@dataclass
class ZeroShotResult:
    """Zero-shot scores of N images against K labels.

    ``scores``: cosine similarity of each image to each label's class embedding ``[N, K]``;
    ``probabilities``: softmax of ``scores / temperature`` over labels ``[N, K]``.
    """

    labels: list[str]
    scores: torch.Tensor
    probabilities: torch.Tensor
    temperature: float

    @property
    def predictions(self) -> list[str]:
        """The best-scoring label of each image."""
        return [self.labels[i] for i in self.scores.argmax(dim=1).tolist()]

    def as_dicts(self) -> list[dict[str, float]]:
        """One ``{label: probability}`` per image."""
        return [dict(zip(self.labels, row, strict=True)) for row in self.probabilities.tolist()]


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def _pad_cat(parts: list[torch.Tensor], masks: list[torch.Tensor]) -> LocalFeatures:
    """Concatenate token features of batches whose token counts differ (frontal-only vs two-view batches)."""
    longest = max(p.shape[1] for p in parts)
    feats, ms = [], []
    for p, m in zip(parts, masks, strict=True):
        extra = longest - p.shape[1]
        feats.append(F.pad(p, (0, 0, 0, extra)))
        ms.append(F.pad(m, (0, extra), value=False))
    return LocalFeatures(torch.cat(feats), torch.cat(ms))


class MedSTEncoder:
    """Embeds chest X-rays and report text with a trained Med-ST model. Build one with `medst.load`.

    Inference runs under `torch.inference_mode`, in eval mode, with bf16 autocast on CUDA (``precision="auto"``)
    and float32 on the CPU, where results are deterministic.
    """

    def __init__(
        self,
        model: MedST,
        tokenizer: Any,
        settings: PreprocessSettings,
        device: torch.device,
        precision: Precision = "auto",
        source: Path | None = None,
        temperature: float = 0.07,
        workers: int = 0,
        weights: Path | None = None,
    ) -> None:
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.settings = settings
        self.device = device
        self.source = source
        self.temperature = temperature
        self.workers = workers
        self.weights = weights
        self._fingerprint: str | None = None
        if precision == "auto":
            precision = "bf16" if device.type == "cuda" else "fp32"
        self.precision = precision

    @property
    def fingerprint(self) -> str:
        """sha256 hex digest of the weights file (feature caches key on it); of the state dict when the model
        was not loaded from a file."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            if self.weights is not None and self.weights.is_file():
                with open(self.weights, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
            else:
                for name, tensor in sorted(self.model.state_dict().items()):
                    t = tensor.detach().cpu().contiguous()
                    h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
                    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"MedSTEncoder(source={self.source}, device={self.device}, precision={self.precision}, "
            f"preset={self.settings.preset}, crop={self.settings.crop})"
        )

    # ------------------------------------------------------------------------------------------------- internals

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _unit(self, x: torch.Tensor) -> torch.Tensor:
        """float32 on the CPU; re-normalised after bf16 (its rounding moves norms off 1), untouched in float32 so
        the numbers are exactly the model's."""
        x = x.float()
        if self.precision == "bf16":
            # Masked (all-zero) rows stay zero: normalize divides by max(norm, eps).
            x = F.normalize(x, dim=-1)
        return x.cpu()

    def _map(self, fn: Callable[[Any], torch.Tensor], items: Sequence[Any]) -> list[torch.Tensor]:
        if self.workers > 1 and len(items) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                return list(pool.map(fn, items))
        return [fn(x) for x in items]

    def prepare_image(self, image: ImageInput) -> torch.Tensor:
        """One model input ``[3, crop, crop]`` float32 from a path, array or tensor (training preprocessing).

        Raises `medst.errors.ImageDecodeError` for a file that cannot be decoded.
        """
        return prepare_image(image, self.settings)

    @torch.inference_mode()
    def encode_prepared(
        self,
        frontal: torch.Tensor,
        lateral: torch.Tensor | None = None,
        has_lateral: torch.Tensor | None = None,
    ) -> Embeddings:
        """Embed one batch of prepared inputs ``[N, 3, crop, crop]`` (``lateral`` zeros where ``has_lateral`` is
        False). Returns CPU float32 features."""
        frontal = frontal.to(self.device, torch.float32)
        num_lateral: int | None = None
        if lateral is not None:
            lateral = lateral.to(self.device, torch.float32)
            if has_lateral is None:
                has_lateral = torch.ones(frontal.shape[0], dtype=torch.bool)
            # Counted before the move (a host tensor here): the image encoder splits the batch by it.
            num_lateral = int(has_lateral.sum())
            has_lateral = has_lateral.to(self.device)
        with self._autocast():
            out = self.model.encode_image(
                frontal, lateral, has_lateral, num_lateral if lateral is not None else None
            )
        return Embeddings(
            embedding=self._unit(out.embedding),
            cls=out.cls.float().cpu(),
            local=LocalFeatures(self._unit(out.patches), out.patch_mask.bool().cpu()),
        )

    def _prepare_batch(
        self, frontal: Sequence[Any], lateral: Sequence[Any] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        f = torch.stack(self._map(self.prepare_image, frontal))
        if lateral is None or all(x is None for x in lateral):
            return f, None, None
        zero = torch.zeros_like(f[0])
        lat = torch.stack(self._map(lambda x: zero if x is None else self.prepare_image(x), lateral))
        has = torch.tensor([x is not None for x in lateral], dtype=torch.bool)
        return f, lat, has

    # ------------------------------------------------------------------------------------------------ images

    @overload
    def encode_images(
        self,
        frontal: ImageInput | Sequence[ImageInput],
        lateral: ImageInput | Sequence[ImageInput | None] | None = ...,
        batch_size: int = ...,
        features: Literal["global", "cls"] = ...,
        progress: bool = ...,
    ) -> torch.Tensor: ...

    @overload
    def encode_images(
        self,
        frontal: ImageInput | Sequence[ImageInput],
        lateral: ImageInput | Sequence[ImageInput | None] | None = ...,
        batch_size: int = ...,
        *,
        features: Literal["patches"],
        progress: bool = ...,
    ) -> LocalFeatures: ...

    @overload
    def encode_images(
        self,
        frontal: ImageInput | Sequence[ImageInput],
        lateral: ImageInput | Sequence[ImageInput | None] | None = ...,
        batch_size: int = ...,
        *,
        features: Literal["all"],
        progress: bool = ...,
    ) -> Embeddings: ...

    def encode_images(
        self,
        frontal: ImageInput | Sequence[ImageInput],
        lateral: ImageInput | Sequence[ImageInput | None] | None = None,
        batch_size: int = 32,
        features: ImageFeatureKind = "global",
        progress: bool = False,
    ) -> torch.Tensor | LocalFeatures | Embeddings:
        """Embed N images (optionally with their lateral views) with the training preprocessing.

        Args:
            frontal: paths (DICOM/JPG/PNG), uint8 grey arrays/tensors ``(H, W)`` (RGB is reduced to luma), or
                prepared float tensors ``[3, crop, crop]`` / a batch ``[N, 3, crop, crop]``.
            lateral: the same kinds, one per frontal, ``None`` for a study without a lateral; omit for single-view.
            features: ``"global"`` -> ``[N, proj_dim]`` normalised; ``"cls"`` -> ``[N, width]``;
                ``"patches"`` -> `LocalFeatures`; ``"all"`` -> `Embeddings`.
        Raises `medst.errors.ImageDecodeError` on the first file that cannot be decoded (``medst embed`` turns such
        files into error rows instead).
        """
        fr = as_image_list(frontal)
        lat = as_image_list(lateral) if lateral is not None else None
        if lat is not None and len(lat) != len(fr):
            raise ValueError(f"{len(fr)} frontal images but {len(lat)} lateral entries (use None for none)")
        parts: list[Embeddings] = []
        bar = _progress(len(fr), "images", progress)
        for a, b in _batches(len(fr), batch_size):
            f, l_, h = self._prepare_batch(fr[a:b], lat[a:b] if lat is not None else None)
            parts.append(self.encode_prepared(f, l_, h))
            bar.update(b - a)
        bar.close()
        return _select(parts, features, self._dims())

    # ------------------------------------------------------------------------------------------------- texts

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token tensors of raw texts after the training cleaning (``input_ids``, ``attention_mask``,
        ``word_ids``, each ``[N, max_tokens]``)."""
        return tokenize_texts(self.tokenizer, [clean_for_model(t) for t in texts], self.settings.max_tokens)

    @torch.inference_mode()
    def encode_tokens(self, tokens: Mapping[str, torch.Tensor]) -> Embeddings:
        """Embed one batch of token tensors (see `tokenize`). Returns CPU float32 features."""
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        words = tokens["word_ids"].to(self.device)
        with self._autocast():
            out = self.model.encode_text(ids, mask, words)
        return Embeddings(
            embedding=self._unit(out.embedding),
            cls=out.cls.float().cpu(),
            local=LocalFeatures(self._unit(out.words), out.word_mask.bool().cpu()),
        )

    @overload
    def encode_texts(
        self,
        texts: str | Sequence[str],
        batch_size: int = ...,
        features: Literal["global", "cls"] = ...,
        progress: bool = ...,
    ) -> torch.Tensor: ...

    @overload
    def encode_texts(
        self,
        texts: str | Sequence[str],
        batch_size: int = ...,
        *,
        features: Literal["words"],
        progress: bool = ...,
    ) -> LocalFeatures: ...

    @overload
    def encode_texts(
        self,
        texts: str | Sequence[str],
        batch_size: int = ...,
        *,
        features: Literal["all"],
        progress: bool = ...,
    ) -> Embeddings: ...

    def encode_texts(
        self,
        texts: str | Sequence[str],
        batch_size: int = 64,
        features: TextFeatureKind = "global",
        progress: bool = False,
    ) -> torch.Tensor | LocalFeatures | Embeddings:
        """Embed N texts after the training cleaning (lower case, ASCII words, sentence rules of SPEC section 1).

        ``features``: ``"global"`` -> ``[N, proj_dim]`` normalised; ``"cls"`` -> ``[N, width]`` (text hidden
        size); ``"words"`` -> `LocalFeatures` (slot ``s`` is word ``s + 1``: the
        words, then ``[SEP]``; ``[CLS]`` is the ``cls`` feature); ``"all"`` -> `Embeddings`.
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        parts: list[Embeddings] = []
        bar = _progress(len(items), "texts", progress)
        for a, b in _batches(len(items), batch_size):
            parts.append(self.encode_tokens(self.tokenize(items[a:b])))
            bar.update(b - a)
        bar.close()
        kind = "patches" if features == "words" else features
        return _select(parts, kind, self._dims(text=True))  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------ similarities

    @staticmethod
    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix ``[len(a), len(b)]`` of two sets of embeddings (re-normalised here)."""
        a2 = F.normalize(torch.as_tensor(a).float().reshape(-1, a.shape[-1]), dim=-1)
        b2 = F.normalize(torch.as_tensor(b).float().reshape(-1, b.shape[-1]), dim=-1)
        return a2 @ b2.T

    def class_embeddings(self, classes: Mapping[str, str | Sequence[str]]) -> tuple[list[str], torch.Tensor]:
        """One embedding per label: the normalised mean of its prompts' normalised embeddings ``[K, proj_dim]``."""
        if not classes:
            raise ValueError("zero_shot needs at least one label with prompts")
        labels, rows = [], []
        for label, prompts in classes.items():
            plist = [prompts] if isinstance(prompts, str) else list(prompts)
            if not plist:
                raise ValueError(f"label {label!r} has no prompts")
            emb = self.encode_texts(plist)
            labels.append(str(label))
            rows.append(F.normalize(emb.mean(dim=0), dim=-1))
        return labels, torch.stack(rows)

    def zero_shot_embeddings(
        self,
        image_embeddings: torch.Tensor,
        classes: Mapping[str, str | Sequence[str]],
        temperature: float | None = None,
    ) -> ZeroShotResult:
        """Zero-shot classification of already-computed global image embeddings ``[N, proj_dim]``."""
        labels, cls_emb = self.class_embeddings(classes)
        scores = self.similarity(image_embeddings, cls_emb)
        t = self.temperature if temperature is None else temperature
        return ZeroShotResult(labels, scores, torch.softmax(scores / t, dim=1), t)

    def zero_shot(
        self,
        images: ImageInput | Sequence[ImageInput],
        classes: Mapping[str, str | Sequence[str]],
        lateral: ImageInput | Sequence[ImageInput | None] | None = None,
        batch_size: int = 32,
        temperature: float | None = None,
    ) -> ZeroShotResult:
        """Zero-shot scores of images against ``{label: [prompts]}``.

        Class embedding = normalised mean of the prompts' embeddings (SPEC section 5.3); ``scores`` are cosines and
        ``probabilities`` a softmax over labels at the model's global temperature (0.07 unless recorded).
        """
        emb = self.encode_images(images, lateral, batch_size=batch_size)
        return self.zero_shot_embeddings(emb, classes, temperature)

    def _dims(self, text: bool = False) -> tuple[int, int]:
        cfg = getattr(self.model, "config", None)
        proj = int(getattr(cfg, "proj_dim", 0))
        if text:
            width = int(getattr(getattr(self.model, "text", None), "hidden", 0))
        else:
            width = int(getattr(cfg, "width", 0))
        return proj, width


def _select(
    parts: list[Embeddings], features: str, dims: tuple[int, int]
) -> torch.Tensor | LocalFeatures | Embeddings:
    if not parts:
        proj, width = dims
        empty = LocalFeatures(torch.zeros(0, 0, proj), torch.zeros(0, 0, dtype=torch.bool))
        parts = [Embeddings(torch.zeros(0, proj), torch.zeros(0, width), empty)]
    if features == "global":
        return torch.cat([p.embedding for p in parts])
    if features == "cls":
        return torch.cat([p.cls for p in parts])
    local = _pad_cat([p.local.features for p in parts], [p.local.mask for p in parts])
    if features == "patches":
        return local
    if features == "all":
        return Embeddings(torch.cat([p.embedding for p in parts]), torch.cat([p.cls for p in parts]), local)
    raise ValueError(f"unknown features {features!r}")


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, unit: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from medst.progress import progress

    return progress(total=total, unit=unit[:-1], desc=f"embedding {unit}")
