"""Windows of decoded studies -> one `medst.batch.Batch` (studies laid out window after window, time order)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medst.batch import Batch
from medst.model.tokenize import encode_texts


@dataclass
class StudyItem:
    """One study ready for collation: images already transformed to float32 (3, H, W)."""

    frontal: np.ndarray
    lateral: np.ndarray | None
    text: str
    study_key: str


def collate_windows(windows: list[list[StudyItem]], tokenizer: Any, max_tokens: int) -> Batch:
    """Stack the studies of `windows` (B windows, each 1..T studies) into a Batch of N = total studies."""
    items = [s for w in windows for s in w]
    if not items:
        raise ValueError("cannot collate an empty batch")
    frontal = np.stack([s.frontal for s in items])
    lateral = np.zeros_like(frontal)
    has_lateral = np.zeros(len(items), dtype=bool)
    for n, s in enumerate(items):
        if s.lateral is not None:
            lateral[n] = s.lateral
            has_lateral[n] = True
    text = encode_texts(tokenizer, [s.text for s in items], max_tokens)
    lengths = [len(w) for w in windows]
    seq_index = np.repeat(np.arange(len(windows)), lengths)
    step_index = np.concatenate([np.arange(n) for n in lengths])
    return Batch(
        frontal=torch.from_numpy(frontal),
        lateral=torch.from_numpy(lateral),
        has_lateral=torch.from_numpy(has_lateral),
        input_ids=torch.from_numpy(text["input_ids"]),
        attention_mask=torch.from_numpy(text["attention_mask"]),
        word_ids=torch.from_numpy(text["word_ids"]),
        sequence_index=torch.from_numpy(seq_index.astype(np.int64)),
        step_index=torch.from_numpy(step_index.astype(np.int64)),
        sequence_lengths=torch.tensor(lengths, dtype=torch.int64),
        study_keys=[s.study_key for s in items],
        max_window=max(lengths, default=0),
        num_lateral=int(has_lateral.sum()),
    )
