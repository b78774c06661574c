"""Turning user text into the model's token tensors, with the training text cleaning (SPEC section 1)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

_WORD = re.compile(r"\w+")


def clean_for_model(text: str) -> str:
    """The training cleaning of one text (`medst.archive.reports.clean_text`).

    Training drops one-token sentences, so a one-word prompt ("Pneumonia.") would vanish; such a text falls back to
    its lower-cased ASCII word tokens instead of becoming empty. Empty or blank input stays empty.
    """
    from medst.archive.reports import clean_text

    cleaned, _ = clean_text(text)
    if cleaned:
        return cleaned
    tokens = [t.encode("ascii", "ignore").decode("ascii") for t in _WORD.findall(text.lower())]
    return " ".join(t for t in tokens if t)


def tokenize_texts(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """Token tensors of already-cleaned texts, exactly as the loader builds them (`medst.shards.tokenize`).

    Returns ``input_ids``, ``attention_mask``, ``word_ids``, each ``[len(texts), max_tokens]`` int64 (see
    `medst.batch.Batch` for the word id convention).
    """
    from medst.model.tokenize import encode_texts

    arrays = encode_texts(tokenizer, list(texts), max_tokens)
    return {name: torch.from_numpy(value) for name, value in arrays.items()}
