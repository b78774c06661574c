"""The batch that the streaming loader produces and the Med-ST model consumes.

Studies of all windows in a batch are laid out window after window, in time order inside each window:
row ``n`` is step ``step_index[n]`` of window ``sequence_index[n]``. Losses that work per window (temporal) scatter
rows into a padded ``[num_windows, max_len, dim]`` layout with these two indices.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass
class Batch:
    """A collated batch of ``N`` studies from ``B`` windows.

    Shapes and dtypes:
        frontal: ``[N, 3, H, W]`` float32, normalised (mean 0.5, std 0.5).
        lateral: ``[N, 3, H, W]`` float32; zeros where a study has no lateral image.
        has_lateral: ``[N]`` bool.
        input_ids: ``[N, L]`` int64 token ids (``L`` = max token length, 112 by default).
        attention_mask: ``[N, L]`` int64, 1 for real tokens.
        word_ids: ``[N, L]`` int64: the word each token belongs to. ``[CLS]`` is word 0, the words of the text
            are 1..W in order (word pieces of one word share an id), ``[SEP]`` is word W+1, padding is -1.
        sequence_index: ``[N]`` int64, which window (0..B-1) the study belongs to.
        step_index: ``[N]`` int64, the study's position in its window (0..len-1).
        sequence_lengths: ``[B]`` int64, number of studies in each window.
        study_keys: N pseudonymous study keys (for debugging and evaluation joins), not moved to devices.
        max_window: the longest window (``max(sequence_lengths)``), a Python int set where the batch is made,
            so that the temporal loss sizes its padded layout without reading a GPU tensor back (a stall every
            step); None: read from ``sequence_lengths``.
        num_lateral: how many studies have a lateral (``has_lateral.sum()``), a Python int set where the batch is
            made, for the same reason: the image encoder splits the batch by it; None: read from ``has_lateral``.
    """

    frontal: torch.Tensor
    lateral: torch.Tensor
    has_lateral: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    word_ids: torch.Tensor
    sequence_index: torch.Tensor
    step_index: torch.Tensor
    sequence_lengths: torch.Tensor
    study_keys: list[str]
    max_window: int | None = None
    skipped: tuple[str, ...] = ()
    """One line per damaged sample left out of this batch (`--skip-bad-samples`), naming shard and member."""
    num_lateral: int | None = None

    @property
    def num_studies(self) -> int:
        return int(self.frontal.shape[0])

    @property
    def num_windows(self) -> int:
        return int(self.sequence_lengths.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def pin_memory(self) -> Batch:
        pinned = {
            f.name: getattr(self, f.name).pin_memory()
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **pinned)
