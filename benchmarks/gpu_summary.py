"""Summarise a `gpu_check.sh` log: the issue-15 figures as ratios against the masked-attention baseline measured
in the same run, one ``GPU_SUMMARY {json}`` line and a README speed-table row (date, device, versions).

    python benchmarks/gpu_summary.py gpu_check.log
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _tagged(lines: list[str], tag: str) -> list[dict]:
    return [json.loads(line[len(tag) + 1 :]) for line in lines if line.startswith(tag + " ")]


def summarise(text: str) -> dict:
    lines = text.splitlines()
    steps = _tagged(lines, "GPU_CHECK")
    trains = _tagged(lines, "GPU_TRAIN_CHECK")

    def first(**match: object) -> dict | None:
        for record in steps:
            if all(record.get(k) == v for k, v in match.items()):
                return record
        return None

    masked = first(attention="masked", compile=False, compat="clean")
    grouped = first(attention="grouped", compile=False, compat="clean")
    compiled = first(attention="grouped", compile=True, compat="clean")
    reference = first(compat="reference")
    train = trains[-1] if trains else None
    versions = next((line for line in lines if line.startswith("torch ")), "")
    date = next((line.split(": ", 1)[1] for line in lines if line.startswith("date: ")), "")

    def ratio(a: dict | None, b: dict | None, key: str) -> float | None:
        if a is None or b is None or not a.get(key) or not b.get(key):
            return None
        return round(a[key] / b[key], 3)

    best = max((r for r in (grouped, compiled) if r), key=lambda r: r["studies_per_s"], default=None)
    train_keys = (
        "studies_per_s", "bare_step_studies_per_s", "trainer_vs_bare_step", "mfu", "peak_memory_GiB",
        "batch_size", "batch_size_auto", "steps", "loss_first_fifth", "loss_last_fifth", "loss_falls",
    )  # fmt: skip
    summary = {
        "date": date,
        "device": (best or masked or {}).get("device"),
        "versions": versions,
        "before_masked": {k: masked.get(k) for k in ("studies_per_s", "mfu", "peak_memory_GiB")}
        if masked
        else None,
        "after_grouped": {k: grouped.get(k) for k in ("studies_per_s", "mfu", "peak_memory_GiB")}
        if grouped
        else None,
        "after_compiled": {
            k: compiled.get(k) for k in ("studies_per_s", "mfu", "peak_memory_GiB", "first_step_s")
        }
        if compiled
        else None,
        "grouped_vs_masked": ratio(grouped, masked, "studies_per_s"),
        "compiled_vs_grouped": ratio(compiled, grouped, "studies_per_s"),
        "compile_warmup_s": round(compiled["first_step_s"] - grouped["first_step_s"], 1)
        if compiled and grouped
        else None,
        "reference_studies_per_s": reference.get("studies_per_s") if reference else None,
        "host_syncs_per_step": {r["tag"]: r.get("host_syncs_per_step") for r in steps},
        "inference_studies_per_s": best.get("inference_studies_per_s") if best else None,
        "trainer": {k: train.get(k) for k in train_keys} if train else None,
    }
    return summary


def table_row(summary: dict) -> str:
    """A README speed-table row: date, device, versions, the model step before -> after, the trainer."""
    before, after = (
        summary.get("before_masked") or {},
        summary.get("after_compiled") or summary.get("after_grouped") or {},
    )
    train = summary.get("trainer") or {}

    def pct(x: object) -> str:
        return f"{100 * x:.1f}%" if isinstance(x, float) else "n/a"

    versions = re.sub(r"\s+", " ", summary.get("versions") or "")
    return (
        f"| {summary.get('date', '')[:10]} | {summary.get('device')} | {versions} | "
        f"{before.get('studies_per_s')} -> {after.get('studies_per_s')} studies/s | "
        f"MFU {pct(before.get('mfu'))} -> {pct(after.get('mfu'))} | "
        f"trainer {train.get('studies_per_s')} studies/s ({train.get('trainer_vs_bare_step')} of the bare step, "
        f"batch {train.get('batch_size')}) |"
    )


def main() -> None:
    text = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else sys.stdin.read()
    summary = summarise(text)
    for key, value in summary.items():
        print(f"{key}: {value}")
    print("README_ROW " + table_row(summary))
    print("GPU_SUMMARY " + json.dumps(summary))


if __name__ == "__main__":
    main()
