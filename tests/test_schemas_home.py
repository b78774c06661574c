"""Every summary and result record lives in ``schemas/`` (issue 17 item 4), next to the config it reports on, so a
record written to disk has one definition; the stage modules import it from there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from medst.demo import DemoResult
from medst.inference.embed import EmbedSummary
from medst.schemas import demo, embed, synth, train
from medst.synth import SynthSummary
from medst.train.loop import RunSummary

PACKAGE = Path(__file__).resolve().parents[1] / "medst"
# In-memory results that are never written as records: they hold arrays or tensors.
IN_MEMORY = {"ZeroShotResult"}


def test_no_summary_or_result_class_is_defined_outside_schemas() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            named = isinstance(node, ast.ClassDef) and re.search(r"(Summary|Result)$", node.name)
            if named and node.name not in IN_MEMORY:
                found.append(f"{path.relative_to(PACKAGE.parent)}: {node.name}")
    assert not found, found


def test_the_old_import_paths_give_the_schema_classes() -> None:
    assert RunSummary is train.RunSummary
    assert SynthSummary is synth.SynthSummary
    assert EmbedSummary is embed.EmbedSummary
    assert DemoResult is demo.DemoResult


def test_summaries_round_trip_through_json(tmp_path: Path) -> None:
    summary = RunSummary(run_dir=tmp_path, steps=3, val={"loss": 1.5}, last_checkpoint=tmp_path / "step-3")
    assert RunSummary.model_validate_json(summary.model_dump_json()) == summary
    counted = EmbedSummary(out=tmp_path / "e.parquet", images=4, image_seconds=2.0)
    counted.errors_by_reason["decode"] = 1
    assert EmbedSummary.model_validate_json(counted.model_dump_json()) == counted
    assert counted.images_per_s == 2.0


# `@overload` signatures of the encoder narrow its feature kinds; the same narrowed pair serves images and texts.
OVERLOAD_LITERALS = {("cls", "global")}


def test_each_literal_of_two_or_more_values_is_declared_once() -> None:
    seen: dict[tuple[str, ...], list[str]] = {}
    for root in (PACKAGE, PACKAGE.parent / "schemas", PACKAGE.parent / "cli"):
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if not (
                    isinstance(node, ast.Subscript)
                    and ast.unparse(node.value) in ("Literal", "typing.Literal")
                ):
                    continue
                items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
                if not all(isinstance(item, ast.Constant) for item in items):
                    continue  # made from a registry (``Literal[tuple(ENGINES)]``): no values spelled here
                values = tuple(sorted(str(ast.literal_eval(item)) for item in items))
                if len(values) > 1 and values not in OVERLOAD_LITERALS:
                    seen.setdefault(values, []).append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    repeated = {values: where for values, where in seen.items() if len(where) > 1}
    assert not repeated, repeated


def test_the_three_image_sizes_are_described_apart() -> None:
    from medst.model.config import ModelConfig
    from medst.schemas.shards import ShardConfig

    described = {
        "synth": synth.SynthConfig.model_fields["image_size"].description or "",
        "shards": ShardConfig.model_fields["image_size"].description or "",
        "model": ModelConfig.model_fields["image_size"].description or "",
    }
    assert "archive" in described["synth"] and "shards" in described["shards"] and "ViT" in described["model"]
    assert len(set(described.values())) == 3
