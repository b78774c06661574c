"""Report text -> token ids, attention mask and word ids with a Hugging Face fast tokenizer (local files only).

Word ids follow the `Batch` convention: ``[CLS]`` is word 0, the words of the text 1..W in order (word pieces of
one word share an id), ``[SEP]`` W+1, padding -1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_tokenizer(folder: str | Path) -> Any:
    """A fast tokenizer from a local folder; never downloads."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, use_fast=True)
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"the tokenizer in {folder} is not a fast tokenizer (word ids need one)")
    return tok


def encode_texts(tokenizer: Any, texts: list[str], max_tokens: int) -> dict[str, np.ndarray]:
    """Tokenise `texts`, padded/truncated to `max_tokens`.

    Returns int64 arrays of shape (N, max_tokens): ``input_ids``, ``attention_mask``, ``word_ids``.
    """
    enc = tokenizer(
        texts, padding="max_length", truncation=True, max_length=max_tokens, return_attention_mask=True
    )
    input_ids = np.asarray(enc["input_ids"], dtype=np.int64)
    mask = np.asarray(enc["attention_mask"], dtype=np.int64)
    word_ids = np.full(input_ids.shape, -1, dtype=np.int64)
    for i in range(len(texts)):
        raw = enc.word_ids(i)
        mapping: dict[int, int] = {}
        real = int(mask[i].sum())
        for j in range(real):
            w = raw[j]
            if w is None:
                continue  # specials, set below
            word_ids[i, j] = mapping.setdefault(w, len(mapping) + 1)
        specials = [j for j in range(real) if raw[j] is None]
        for j in specials:
            word_ids[i, j] = 0 if j == 0 else len(mapping) + 1
    return {"input_ids": input_ids, "attention_mask": mask, "word_ids": word_ids}
