"""`evaluate(config) -> Results`: run the chosen benchmark tasks on one model and write the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medst._version import __version__
from medst.errors import UserInputError
from medst.eval import covidx, mscxrt_image, mscxrt_sentence, retrieval, rsna
from medst.eval import readers as R
from medst.eval.features import FeatureExtractor
from medst.eval.output import TaskOutput
from medst.eval.report import write_json, write_markdown, write_plots
from medst.eval.splits import default_manifest_path, load_manifest
from medst.outputs import check_output_dir, claim_output_dir
from medst.schemas.eval import EvalConfig, Results

MSCXRT_SUBDIRS = ("benchmarks", "ms-cxr-t", "mscxrt", "ms_cxr_t", "MS-CXR-T", "benchmarks/ms-cxr-t")
RSNA_SUBDIRS = ("rsna", "benchmarks/rsna", "RSNA", "rsna-pneumonia")
COVIDX_SUBDIRS = ("covidx", "benchmarks/covidx", "COVIDx", "COVIDX")


def load_encoder(run: Path, device: str | None = None) -> Any:
    """The model of a run folder (``RUN/export``) or an export folder, through the inference API."""
    from medst.inference import load

    if not run.exists():
        raise UserInputError(f"model not found: {run} (pass a run folder or an exported model folder)")
    return load(run, device=device)


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


def _run_task(task: str, config: EvalConfig, encoder: Any, extractor: FeatureExtractor) -> TaskOutput:
    n_boot, boot_seed = config.bootstrap, config.bootstrap_seed
    if task in ("mscxrt-image", "mscxrt-sentence"):
        pattern = R.MSCXRT_IMAGE_GLOB if task == "mscxrt-image" else R.MSCXRT_SENTENCE_GLOB
        folder = R.find_dir_with(
            config.mscxrt_dir, config.data, [pattern], MSCXRT_SUBDIRS, "MS-CXR-T", "--mscxrt-dir"
        )
        csv_path = sorted(folder.glob(pattern))[-1]
        if task == "mscxrt-image":
            pairs = R.read_mscxrt_image(csv_path, _mimic_root(config, folder))
            return mscxrt_image.run(extractor, pairs, config.seeds, config.folds, n_boot, boot_seed)
        return mscxrt_sentence.run(
            extractor, R.read_mscxrt_sentences(csv_path), config.sentence_folds, n_boot, boot_seed
        )
    if task == "rsna-zeroshot":
        folder = R.find_dir_with(
            config.rsna_dir, config.data, [R.RSNA_LABELS], RSNA_SUBDIRS, "RSNA", "--rsna-dir"
        )
        manifest = load_manifest(config.rsna_split or default_manifest_path())
        return rsna.run(extractor, R.read_rsna(folder), manifest, config.out, n_boot, boot_seed)
    if task == "covidx-probe":
        folder = R.find_dir_with(
            config.covidx_dir,
            config.data,
            ["train.txt", "test.txt"],
            COVIDX_SUBDIRS,
            "COVIDx",
            "--covidx-dir",
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
            n_boot,
            boot_seed,
        )
    if task == "retrieval":
        if config.shards is None or not config.shards.is_dir():
            raise UserInputError(
                f"retrieval: shards folder not found: {config.shards} (pass --shards SHARDS)"
            )
        img, txt, _keys = retrieval.held_out_embeddings(
            encoder, config.shards, config.retrieval_split, config.progress
        )
        return retrieval.run(img, txt, n_boot, boot_seed, config.retrieval_split)
    raise UserInputError(f"unknown task {task!r}")


def evaluate(config: EvalConfig, encoder: Any | None = None, skip_missing: bool = False) -> Results:
    """Run ``config.tasks`` and write ``results.json``, ``results.md`` and ``plots/`` under ``config.out``.

    ``encoder``: an already loaded encoder (else `medst.load(config.run)`). ``skip_missing``: a task whose
    input files are not found is skipped with a note instead of stopping everything (``--task all``).
    """
    start = time.perf_counter()
    inputs, legacy = [config.run, config.shards, config.rsna_split], ("results.json",)
    roots = [config.data, config.mscxrt_dir, config.mimic_root, config.rsna_dir, config.covidx_dir]
    # Before the model loads: a folder that is not ours is refused at once; it is created once the model loaded.
    check_output_dir(config.out, "eval", inputs=inputs, roots=roots, legacy_markers=legacy)
    if encoder is None:
        encoder = load_encoder(config.run, config.device)
    claimed = claim_output_dir(config.out, "eval", inputs=inputs, roots=roots, legacy_markers=legacy)
    extractor = FeatureExtractor(
        encoder, config.cache_dir or config.out / "feature_cache", config.batch_size, progress=config.progress
    )
    outputs: list[TaskOutput] = []
    skipped: list[str] = []
    for task in config.tasks:
        try:
            outputs.append(_run_task(task, config, encoder, extractor))
        except UserInputError as err:
            if not skip_missing:
                claimed.release_if_unused()
                raise
            skipped.append(f"{task}: skipped ({err})")
    if not outputs:
        claimed.release_if_unused()
        raise UserInputError("no task could run: " + "; ".join(skipped))
    plots = write_plots(outputs, config.out / "plots") if config.plots else []
    results = Results(
        medst_version=__version__,
        run=str(config.run),
        model_fingerprint=extractor.fingerprint,
        config=config.model_dump(mode="json"),
        metrics=[m for o in outputs for m in o.metrics],
        tasks=[o.summary for o in outputs],
        plots=[str(p.relative_to(config.out)) for p in plots],
        seconds=time.perf_counter() - start,
    )
    for note in skipped:
        results.tasks.append(type(results.tasks[0])(task=note.split(":")[0], n_rows=0, notes=[note]))
    write_json(results, config.out / "results.json")
    write_markdown(results, outputs, config.out / "results.md")
    claimed.finish()
    return results
