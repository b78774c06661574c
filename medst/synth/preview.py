"""`OUT/preview.png`: one synthetic patient's timeline (frontal and lateral per study, date, impression)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import polars as pl

MAX_STUDIES = 6


def first_impression_line(report: str) -> str:
    """The first sentence of the impression, else of the last paragraph ('' for an empty report)."""
    paragraphs: list[list[str]] = [[]]
    for line in report.splitlines():
        text = line.strip()
        if not text or text.startswith("_"):
            paragraphs.append([])
        elif not text.startswith("FINAL"):
            paragraphs[-1].append(text)
    paragraphs = [p for p in paragraphs if p]
    chosen: list[str] = []
    for i, para in enumerate(paragraphs):
        head = para[0].upper()
        if (
            head.startswith(("IMPRESSION", "FINDINGS/IMPRESSION"))
            and head.endswith(":")
            and i + 1 < len(paragraphs)
        ):
            chosen = paragraphs[i + 1]
    if not chosen and paragraphs:
        chosen = next(
            (p for p in reversed(paragraphs) if not p[0].upper().startswith("ADDENDUM")), paragraphs[-1]
        )
    text = " ".join(chosen)
    text = text[3:] if text[:3] == "1. " else text
    return text.split(". ")[0].rstrip(".")


def pick_patient(images: pl.DataFrame) -> int:
    """The subject with the most studies having both a frontal and a lateral, ties to the most findings."""
    per_study = images.group_by("subject_id", "study_id").agg(
        (pl.col("view") == "frontal").any().alias("f"),
        (pl.col("view") == "lateral").any().alias("l"),
        (
            pl.col("sev_pleural_effusion")
            + pl.col("sev_consolidation")
            + pl.col("sev_edema")
            + pl.col("sev_pneumothorax")
            + pl.col("sev_cardiomegaly")
        )
        .first()
        .alias("burden"),
    )
    score = (
        per_study.group_by("subject_id")
        .agg(
            (pl.col("f") & pl.col("l")).sum().clip(0, MAX_STUDIES).alias("pairs"),
            (pl.col("burden") > 0).sum().alias("sick"),
        )
        .sort("pairs", "sick", "subject_id", descending=[True, True, False])
    )
    return int(score["subject_id"][0])


def write_preview(images: pl.DataFrame, studies: pl.DataFrame, report_root: Path, path: Path) -> Path:
    """Draw the timeline of `pick_patient` to `path` (PNG, deterministic) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medst.synth.phantom import render_row

    subject = pick_patient(images)
    mine = images.filter(pl.col("subject_id") == subject).sort("study_index")
    study_ids = mine["study_id"].unique(maintain_order=True).to_list()[:MAX_STUDIES]
    fig, axes = plt.subplots(2, len(study_ids), figsize=(2.6 * len(study_ids), 6.4), squeeze=False)
    first_dt = mine["study_datetime"][0]
    for j, sid in enumerate(study_ids):
        rows = mine.filter(pl.col("study_id") == sid)
        dt = rows["study_datetime"][0]
        for i, view in enumerate(("frontal", "lateral")):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            pick = rows.filter(pl.col("view") == view)
            if pick.height:
                ax.imshow(render_row(pick.row(0, named=True)), cmap="gray", vmin=0, vmax=1)
            else:
                ax.set_facecolor("black")
                ax.text(
                    0.5, 0.5, f"no {view}", color="white", ha="center", va="center", transform=ax.transAxes
                )
        sub = str(subject)
        report = (report_root / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{sid}.txt").read_text()
        days = (dt - first_dt).total_seconds() / 86400
        axes[0][j].set_title(f"{dt:%Y-%m-%d}  (day {days:.0f})\ns{sid}", fontsize=8)
        axes[1][j].set_xlabel(
            textwrap.fill(first_impression_line(report) or "(empty report)", 34), fontsize=7
        )
    fig.suptitle(f"synthetic patient p{subject}: frontal (top) and lateral (bottom) per study", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)
    return path
