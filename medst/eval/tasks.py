"""The benchmark tasks of `medst eval`, by name: each entry finds its files from the config and runs its protocol.

Adding a task is one module with the protocol, a runner ``(config, encoder, extractor) -> TaskOutput`` here (its
file lookup), one entry in `TASKS`, and its name in `medst.schemas.eval.TaskName` (the config validates against
it). `tests/test_eval_protocols.py` checks that every declared name has an entry and every entry a name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medst.errors import UserInputError
from medst.eval import covidx, mscxrt_image, mscxrt_sentence, retrieval, rsna
from medst.eval import readers as R
from medst.eval.features import FeatureExtractor
from medst.eval.output import TaskOutput
from medst.eval.splits import default_manifest_path, load_manifest
from medst.schemas.eval import EvalConfig

TaskRunner = Callable[[EvalConfig, Any, FeatureExtractor], TaskOutput]


@dataclass(frozen=True)
class EvalTask:
    """One benchmark: how it runs, and what it reads."""

    run: TaskRunner
    """``run(config, encoder, extractor)``: finds its files from the config and runs the protocol; raises
    `UserInputError` when its files are not found."""
    needs_shards: bool = False
    """True when it reads built shards (``--shards``) rather than benchmark files under ``--data``."""


MSCXRT_SUBDIRS = ("benchmarks", "ms-cxr-t", "mscxrt", "ms_cxr_t", "MS-CXR-T", "benchmarks/ms-cxr-t")
RSNA_SUBDIRS = ("rsna", "benchmarks/rsna", "RSNA", "rsna-pneumonia")
COVIDX_SUBDIRS = ("covidx", "benchmarks/covidx", "COVIDx", "COVIDX")


def _mimic_root(config: EvalConfig, mscxrt_dir: Path) -> Path:
    if config.mimic_root is not None:
        return config.mimic_root
    # synth writes OUT/benchmarks next to the archive root OUT; a MIMIC root holds files/.
    for candidate in (
        config.data,
        mscxrt_dir,
        mscxrt_dir.parent,
        *([config.data.parent] if config.data else []),
    ):
        if candidate is not None and (candidate / "files").is_dir():
            return candidate
    return mscxrt_dir.parent


def _mscxrt_csv(config: EvalConfig, pattern: str) -> tuple[Path, Path]:
    folder = R.find_dir_with(
        config.mscxrt_dir, config.data, [pattern], MSCXRT_SUBDIRS, "MS-CXR-T", "--mscxrt-dir"
    )
    return folder, sorted(folder.glob(pattern))[-1]


def run_mscxrt_image(config: EvalConfig, encoder: Any, extractor: FeatureExtractor) -> TaskOutput:
    folder, csv_path = _mscxrt_csv(config, R.MSCXRT_IMAGE_GLOB)
    pairs = R.read_mscxrt_image(csv_path, _mimic_root(config, folder))
    return mscxrt_image.run(
        extractor, pairs, config.seeds, config.folds, config.bootstrap, config.bootstrap_seed
    )


def run_mscxrt_sentence(config: EvalConfig, encoder: Any, extractor: FeatureExtractor) -> TaskOutput:
    _folder, csv_path = _mscxrt_csv(config, R.MSCXRT_SENTENCE_GLOB)
    return mscxrt_sentence.run(
        extractor,
        R.read_mscxrt_sentences(csv_path),
        config.sentence_folds,
        config.bootstrap,
        config.bootstrap_seed,
    )


def run_rsna_zeroshot(config: EvalConfig, encoder: Any, extractor: FeatureExtractor) -> TaskOutput:
    folder = R.find_dir_with(
        config.rsna_dir, config.data, [R.RSNA_LABELS], RSNA_SUBDIRS, "RSNA", "--rsna-dir"
    )
    manifest = load_manifest(config.rsna_split or default_manifest_path())
    return rsna.run(
        extractor, R.read_rsna(folder), manifest, config.out, config.bootstrap, config.bootstrap_seed
    )


def run_covidx_probe(config: EvalConfig, encoder: Any, extractor: FeatureExtractor) -> TaskOutput:
    folder = R.find_dir_with(
        config.covidx_dir, config.data, ["train.txt", "test.txt"], COVIDX_SUBDIRS, "COVIDx", "--covidx-dir"
    )
    settings = covidx.ProbeSettings(
        lr=config.probe_lr,
        weight_decay=config.probe_weight_decay,
        batch_size=config.probe_batch_size,
        max_epochs=config.probe_max_epochs,
        patience=config.probe_patience,
        seed=config.probe_seed,
    )
    return covidx.run(
        extractor,
        R.read_covidx(folder, "train"),
        R.read_covidx(folder, "test"),
        config.probe_fractions,
        settings,
        config.bootstrap,
        config.bootstrap_seed,
    )


def run_retrieval(config: EvalConfig, encoder: Any, extractor: FeatureExtractor) -> TaskOutput:
    if config.shards is None or (isinstance(config.shards, Path) and not config.shards.is_dir()):
        raise UserInputError(f"retrieval: shards folder not found: {config.shards} (pass --shards SHARDS)")
    img, txt, _keys = retrieval.held_out_embeddings(
        encoder, config.shards, config.retrieval_split, config.progress
    )
    return retrieval.run(img, txt, config.bootstrap, config.bootstrap_seed, config.retrieval_split)


TASKS: dict[str, EvalTask] = {
    "mscxrt-image": EvalTask(run_mscxrt_image),
    "mscxrt-sentence": EvalTask(run_mscxrt_sentence),
    "rsna-zeroshot": EvalTask(run_rsna_zeroshot),
    "covidx-probe": EvalTask(run_covidx_probe),
    "retrieval": EvalTask(run_retrieval, needs_shards=True),
}
"""Task name -> task; the names are those of `medst.schemas.eval.TaskName`."""
