"""The human build report: ``build_report.md`` with five PNG charts, made from build_report.json's dict.

Plots: studies per patient (a histogram), sequence lengths, view availability, report section used, rejects.
PNGs carry no timestamp or software metadata, so a re-run writes identical bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_PLOTS = (
    ("studies_per_patient", "Studies per patient", "studies per patient", "patients"),
    ("sequence_lengths", "Sequence lengths", "studies in the sequence", "sequences"),
    ("view_availability", "View availability per study", "views in the study", "studies"),
    ("section_used", "Report section used for the training text", "report section", "studies"),
    ("rejects_by_reason", "Rejects by reason", "reason", "rejected items"),
)


def _figure() -> tuple[Figure, Axes]:
    """A 640x360 px figure with one axes, drawn by Agg. Built without pyplot: no figure manager to close, and
    no pyplot import (a large part of matplotlib's start-up cost, paid on every build)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _bar(path: Path, data: dict[str, int], title: str, xlabel: str, ylabel: str) -> None:
    fig, ax = _figure()
    keys = list(data)
    ax.bar(range(len(keys)), [data[k] for k in keys], color="#4a7ab0")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels(
        keys,
        rotation=30 if max((len(k) for k in keys), default=0) > 6 else 0,
        ha="right" if max((len(k) for k in keys), default=0) > 6 else "center",
        fontsize=8,
    )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def _value_sections(report: dict[str, Any]) -> list[str]:
    """Report encodings, time values not understood and view values not mapped (by value, with counts)."""
    lines: list[str] = []
    encodings = report.get("report_encodings") or {}
    if encodings:
        lines += ["", "## Report encodings", ""]
        lines += [f"- {k}: {v}" for k, v in encodings.items()]
        lines.append(
            f"- read with the declared fallback {report.get('fallback_encoding')}: "
            f"{report.get('reports_with_fallback_encoding', 0)}"
        )
    for key, values in (report.get("unparsed_values") or {}).items():
        lines += ["", f"## `{key}` values not understood (rows rejected; most frequent first)", ""]
        lines += ["| value | rows |", "|---|---|"] + [f"| `{v}` | {n} |" for v, n in values.items()]
    unmapped = report.get("unmapped_views") or {}
    if unmapped:
        lines += ["", "## View values not mapped (view `other`; images)", ""]
        lines += ["| value | images |", "|---|---|"] + [f"| `{v}` | {n} |" for v, n in unmapped.items()]
    return lines


def _histogram(path: Path, data: dict[str, int], title: str, xlabel: str, ylabel: str) -> None:
    """Counts per integer value (e.g. studies per patient) as a histogram: MIMIC-CXR has patients with 1 to
    over 100 studies, far too many values for one bar each. Equal-width integer bins (at most 40), and a log
    count axis once the counts span more than a factor 30, so the long tail of busy patients stays visible."""
    import math

    import numpy as np

    values = np.array([int(k) for k in data], dtype=np.float64)
    weights = np.array(list(data.values()), dtype=np.float64)
    fig, ax = _figure()
    top = int(values.max()) if values.size else 1
    width = max(1, math.ceil(top / 40))
    bins = np.arange(0.5, top + width + 0.5, width)
    if width > 1:
        xlabel += f" (bins of {width})"
    ax.hist(values, bins=bins.tolist(), weights=weights, color="#4a7ab0", edgecolor="white")
    if weights.size and weights.max() > 30 * max(weights.min(), 1):
        ax.set_yscale("log")
        ylabel += " (log scale)"
    total = int(weights.sum())
    mean = float((values * weights).sum() / total) if total else float("nan")
    ax.set_title(f"{title}: {total:,} patients, mean {mean:.1f}, max {top}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})


def write_markdown(folder: Path, report: dict[str, Any]) -> None:
    """Write ``build_report.md`` and its PNGs into `folder`."""
    acc = report["accounting"]
    lines = [
        "# medst build-sequences report",
        "",
        f"- medst {report['medst_version']}, source `{report['source']}`, compat `{report['options']['compat']}`",
        f"- image root: `{report['image_root']}`",
        f"- patients {report['counts']['patients']}, studies {report['counts']['studies']}, "
        f"sequences {report['counts']['sequences']} ({report['counts']['full_length_sequences']} of full length), "
        f"images {report['counts']['images']}",
        "",
        "## Accounting (every input is accepted or rejected)",
        "",
        "| item | inputs | accepted | rejected |",
        "|---|---|---|---|",
    ]
    for what in ("images", "reports"):
        a = acc[what]
        ok = "" if a["inputs"] == a["accepted"] + a["rejected"] else " **MISMATCH**"
        lines.append(f"| {what} | {a['inputs']} | {a['accepted']} | {a['rejected']}{ok} |")
    lines += ["", f"Table rows rejected (malformed or duplicate rows): {acc['table_rows_rejected']}", ""]
    lines += ["## Rejects by reason", "", "| item / reason | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["rejects_by_kind"].items()]
    if report.get("low_yield"):
        lines += ["", "## Too little kept", "", f"**{report['low_yield']}**"]
    lines += _value_sections(report)
    lines += ["", "## Splits (patients)", ""]
    lines += [f"- {k}: {v}" for k, v in report["splits_patients"].items()]
    if report.get("manifest"):
        lines += ["", f"## Check against data manifest `{report['manifest']}`", ""]
        lines += [f"- {d}" for d in report["manifest_differences"]] or ["- no differences"]
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    lines += ["", "## Plots", ""]
    for key, title, xlabel, ylabel in _PLOTS:
        data = report.get(key) or {}
        name = f"{key}.png"
        draw = _histogram if key == "studies_per_patient" and data else _bar
        draw(folder / name, data, title, xlabel, ylabel)
        lines.append(f"![{title}]({name})")
    (folder / "build_report.md").write_text("\n".join(lines) + "\n")
