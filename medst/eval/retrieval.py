"""Image-report retrieval on held-out studies of built shards (SPEC section 5.5, beyond the paper).

Every study of the chosen split once: its frontal image's global embedding against its report's global embedding
(both L2-normalised, cosine similarity). R@1/5/10 image->text (rows = images) and text->image; a query counts as
a hit when its own study ranks in the top k, ties counted against it. Chance level of R@k = k/N.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medst.eval import metrics as M
from medst.eval.output import TaskOutput
from medst.schemas.eval import MetricResult, TaskSummary
from medst.storage import Location

TASK = "retrieval"
KS: tuple[int, ...] = (1, 5, 10)


def held_out_embeddings(
    encoder: Any, shards: Location, split: str, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(image embeddings ``[N, d]``, text embeddings ``[N, d]``, study keys) of each study of ``split`` once.

    Reads the shards with the training loader in evaluation mode (centre crop, no shuffling), then embeds the
    prepared tensors through the encoder, so preprocessing is exactly the training one.
    """
    from medst.progress import progress as bar
    from medst.schemas.shards import LoaderConfig
    from medst.shards.loader import TimelineLoader

    settings = getattr(encoder, "settings", None)
    cfg = LoaderConfig(
        shards=shards,
        split=split,
        train=False,
        shuffle=False,
        drop_last=False,
        letterbox=getattr(settings, "letterbox", 256),
        crop=getattr(settings, "crop", 224),
        max_tokens=getattr(settings, "max_tokens", 112),
    )
    seen: set[str] = set()
    images: list[torch.Tensor] = []
    texts: list[torch.Tensor] = []
    keys: list[str] = []
    for batch in bar(TimelineLoader(cfg, encoder.tokenizer), desc="retrieval batches", enabled=progress):
        fresh = [i for i, k in enumerate(batch.study_keys) if k not in seen]
        if not fresh:
            continue
        idx = torch.tensor(fresh, dtype=torch.long)
        seen.update(batch.study_keys[i] for i in fresh)
        keys.extend(batch.study_keys[i] for i in fresh)
        images.append(encoder.encode_prepared(batch.frontal[idx]).embedding)
        tokens = {
            "input_ids": batch.input_ids[idx],
            "attention_mask": batch.attention_mask[idx],
            "word_ids": batch.word_ids[idx],
        }
        texts.append(encoder.encode_tokens(tokens).embedding)
    if not keys:
        return np.zeros((0, 0)), np.zeros((0, 0)), []
    return torch.cat(images).numpy(), torch.cat(texts).numpy(), keys


def run(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    n_bootstrap: int,
    bootstrap_seed: int = 0,
    split: str = "test",
) -> TaskOutput:
    """R@k both ways with bootstrap CIs (resampling queries; the gallery stays whole)."""
    n = int(image_emb.shape[0])
    out = TaskOutput(metrics=[], summary=TaskSummary(task=TASK, n_rows=n))
    if n == 0:
        out.summary.notes.append(f"no studies in split {split!r}: retrieval skipped")
        return out
    img = image_emb / np.maximum(np.linalg.norm(image_emb, axis=1, keepdims=True), 1e-12)
    txt = text_emb / np.maximum(np.linalg.norm(text_emb, axis=1, keepdims=True), 1e-12)
    sim = img.astype(np.float64) @ txt.astype(np.float64).T
    for direction, matrix in (("image->text", sim), ("text->image", sim.T)):
        for k in KS:
            hits = M.retrieval_hits(matrix, k)
            lo, hi = M.bootstrap_rows(np.mean, hits, n_resamples=n_bootstrap, seed=bootstrap_seed)
            out.metrics.append(
                MetricResult(
                    task=TASK,
                    metric=f"R@{k} {direction}",
                    variant="both",
                    protocol=f"{n} held-out studies ({split} split), cosine of global embeddings, ties count as misses",
                    value=float(hits.mean()),
                    ci_low=lo,
                    ci_high=hi,
                    chance=min(1.0, k / n),
                    n=n,
                )
            )
    return out
