"""Random batches in the :class:`medst.batch.Batch` layout, for tests, benchmarks and the GPU check."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medst.batch import Batch
from medst.model.config import ModelConfig


def random_batch(
    config: ModelConfig,
    lengths: Sequence[int] = (4, 4),
    lateral_fraction: float = 0.5,
    max_words: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Batch:
    """A batch of ``len(lengths)`` windows with ``lengths[b]`` studies each: random images (zeros where a lateral
    is missing, about ``lateral_fraction`` present), random reports of random word counts with one to three word
    pieces per word, token length ``config.text.max_length``."""
    g = torch.Generator().manual_seed(seed)
    n = int(sum(lengths))
    size, length = config.image_size, config.text.max_length
    vocab = config.text.vocab_size
    frontal = torch.randn(n, config.in_channels, size, size, generator=g)
    has_lateral = torch.rand(n, generator=g) < lateral_fraction
    lateral = torch.randn(n, config.in_channels, size, size, generator=g) * has_lateral[:, None, None, None]
    input_ids = torch.zeros(n, length, dtype=torch.long)
    attention_mask = torch.zeros(n, length, dtype=torch.long)
    word_ids = torch.full((n, length), -1, dtype=torch.long)
    limit = length - 2 if max_words is None else min(max_words, length - 2)
    for i in range(n):
        pieces: list[int] = []
        num_words = int(torch.randint(2, max(3, limit // 2), (1,), generator=g))
        for w in range(1, num_words + 1):
            pieces += [w] * int(torch.randint(1, 4, (1,), generator=g))
        pieces = pieces[: length - 2]
        last = pieces[-1] if pieces else 0
        ids_i = [0, *pieces, last + 1]
        t = len(ids_i)
        word_ids[i, :t] = torch.tensor(ids_i)
        attention_mask[i, :t] = 1
        input_ids[i, :t] = torch.randint(5, vocab, (t,), generator=g)
        input_ids[i, 0], input_ids[i, t - 1] = 2, 3
    sequence_index = torch.cat([torch.full((k,), b, dtype=torch.long) for b, k in enumerate(lengths)])
    step_index = torch.cat([torch.arange(k) for k in lengths])
    batch = Batch(
        frontal=frontal,
        lateral=lateral,
        has_lateral=has_lateral,
        input_ids=input_ids,
        attention_mask=attention_mask,
        word_ids=word_ids,
        sequence_index=sequence_index,
        step_index=step_index,
        sequence_lengths=torch.tensor(list(lengths), dtype=torch.long),
        study_keys=[f"s{i}" for i in range(n)],
        max_window=max(lengths, default=0),
        num_lateral=int(has_lateral.sum()),
    )
    return batch.to(device)
