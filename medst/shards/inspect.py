"""`medst inspect`: one patient's timeline drawn from the shards (frontal and lateral per study, day offset, first
sentence of the report), so a user can see what went into training."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from medst.errors import UserInputError
from medst.shards.members import decode_image as decode_grey

from .format import VIEWS, StoredSample, ends_early, iter_samples
from .index import list_entries, missing_shards
from .members import BadImageError, ShardReadError


def find_timeline(shards: Path, patient: str | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The parsed json and the image members (suffix -> bytes) of patient `patient` (a pseudonymous key), or of the
    longest timeline if None.

    Reads the shards of the folder's plan through the checked member reader; a damaged shard or member raises
    `ShardReadError` naming both. The returned json carries the shard's path under ``"_shard"``.
    """
    best: tuple[int, dict[str, Any], dict[str, bytes]] | None = None
    for entry in list_entries(shards):
        path = shards / entry.shard
        read = 0
        with open(path, "rb") as fh:
            for sample in iter_samples(fh, path):
                read += 1
                if patient is not None and sample.key != patient:
                    continue
                meta = sample.timeline()
                if best is not None and len(meta["studies"]) <= best[0]:
                    continue
                best = (len(meta["studies"]), {**meta, "_shard": str(path)}, sample.images())
                if patient is not None:
                    break
        short = ends_early(path, read, entry.samples) if patient is None else None
        if short is not None:
            raise short
        if patient is not None and best is not None:
            break
    if best is None:
        damaged = missing_shards(shards)
        also = (
            f" ({len(damaged)} shard(s) of its plan missing or damaged, first {damaged[0]}.tar)"
            if damaged
            else ""
        )
        raise UserInputError(
            f"patient {patient!r} is in no complete shard of {shards}{also}"
            if patient
            else f"{shards} holds no sample{also}"
        )
    return best[1], best[2]


def first_sentence(text: str, words: int = 12) -> str:
    """The report's first sentence (training text has no full stops, so: its first `words` words)."""
    head = text.split(". ")[0].split()
    return " ".join(head[:words]) + (" ..." if len(head) > words else "")


def draw_timeline(shards: Path, out: Path, patient: str | None = None, max_studies: int = 12) -> Path:
    """Write a PNG: one column per study (frontal on top, lateral below or 'no lateral'), titled with the day
    offset and the first words of its report. Returns `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta, files = find_timeline(shards, patient)
    sample = StoredSample(meta["key"], meta["_shard"], files)
    studies = meta["studies"][:max_studies]
    n = len(studies)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 6.2), squeeze=False)
    for col, study in enumerate(studies):
        for row, view in enumerate(VIEWS):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            name = sample.image_suffix(study["index"], view)
            if name is None:
                ax.imshow(np.zeros((8, 8)), cmap="gray", vmin=0, vmax=1)
                ax.text(4, 4, f"no {view}", color="white", ha="center", va="center", fontsize=9)
            else:
                try:
                    grey = decode_grey(files[name])
                except BadImageError as err:
                    raise ShardReadError(sample.shard, sample.member(name), str(err)) from None
                ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
            if row == 0:
                ax.set_title(f"day {study['day_offset']:.1f}", fontsize=10)
            else:
                ax.set_xlabel("\n".join(textwrap.wrap(first_sentence(study["text"]), 26)), fontsize=8)
        axes[0][col].set_ylabel("frontal" if col == 0 else "")
        axes[1][col].set_ylabel("lateral" if col == 0 else "")
    more = f" (first {max_studies} of {len(meta['studies'])})" if len(meta["studies"]) > max_studies else ""
    fig.suptitle(
        f"patient {meta['key']} ({meta['split']}): {len(meta['studies'])} studies{more}", fontsize=11
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
