"""Med-ST model folders as Hugging Face models: ``save_pretrained``, ``from_pretrained`` and ``push_to_hub``.

A thin layer over what already exists: the folder is the one ``medst pretrain`` exports (written by
`medst.model.io.save_model`: ``model.safetensors`` + ``config.json`` + tokenizer files) and loading goes
through `medst.load`, so preprocessing, strict key checks and devices behave exactly as there. What
huggingface_hub's ``ModelHubMixin`` adds: a Hub id works wherever a folder does (downloaded once, then read
from the local cache; ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` never touches the network), uploads,
and a ``README.md`` model card whose YAML block (license, library, datasets, metrics from ``medst eval``) the
Hub indexes.

    from medst.hub import MedSTModel
    model = MedSTModel.from_pretrained("RUN/export")        # or "org/name" on the Hub
    model.save_pretrained("my-model", model_card_kwargs={"results": "EVAL/results.json"})
    model.encoder.encode_images(["a.dcm"])                   # the usual `MedSTEncoder`

Safetensors only: a folder or Hub repo whose weights are a pickle-based PyTorch file is refused, and only
safetensors, JSON, text and tokenizer files are downloaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData, ModelHubMixin, snapshot_download

from medst.inference.encoder import MedSTEncoder
from medst.inference.loading import ModelLoadError, load
from medst.model.io import WEIGHTS_FILE, read_model_meta, save_model
from medst.schemas.common import Precision

LICENSE = "apache-2.0"
TAGS = ["medst", "med-st", "chest-x-ray", "vision-language", "radiology", "safetensors"]
# Downloaded from a Hub repo: everything `medst.load` reads, and never a pickle.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.md", "*.model", "tokenizer*"]
# medst eval task -> (model-index task type, dataset type, dataset name as shown on the Hub).
EVAL_TASKS = {
    "mscxrt-image": ("image-classification", "ms-cxr-t", "MS-CXR-T temporal image classification"),
    "mscxrt-sentence": ("sentence-similarity", "ms-cxr-t", "MS-CXR-T temporal sentence similarity"),
    "rsna-zeroshot": ("zero-shot-image-classification", "rsna-pneumonia", "RSNA pneumonia, zero-shot"),
    "covidx-probe": ("image-classification", "covidx", "COVIDx linear probe"),
    "retrieval": ("image-text-retrieval", "held-out-studies", "image-report retrieval, held-out studies"),
}


class MedSTModel(
    ModelHubMixin,
    library_name="medst",
    license=LICENSE,
    tags=TAGS,
    repo_url="https://github.com/SVT-Yang/MedST",
):
    """An exported Med-ST model with the Hugging Face ``save_pretrained`` / ``from_pretrained`` /
    ``push_to_hub`` methods. ``encoder`` is the `MedSTEncoder` that `medst.load` returns."""

    def __init__(self, encoder: MedSTEncoder) -> None:
        self.encoder = encoder

    @property
    def extra(self) -> dict[str, Any]:
        """The ``extra`` block of the loaded folder's ``config.json`` (run config, data, preprocessing)."""
        if self.encoder.source is None:
            return {}
        try:
            value = read_model_meta(self.encoder.source).get("extra")
        except Exception:  # a checkpoint folder: no export config beside it
            return {}
        return value if isinstance(value, dict) else {}

    def _save_pretrained(self, save_directory: Path) -> None:
        save_model(self.encoder.model, save_directory, tokenizer=self.encoder.tokenizer, extra=self.extra)
        if self.encoder.source is not None and (self.encoder.source / "training.json").is_file():
            (save_directory / "training.json").write_bytes(
                (self.encoder.source / "training.json").read_bytes()
            )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        device: str | None = None,
        precision: Precision = "auto",
        **_ignored: Any,
    ) -> MedSTModel:
        folder = Path(model_id)
        if not folder.is_dir():
            folder = Path(
                snapshot_download(
                    repo_id=model_id,
                    revision=revision,
                    cache_dir=cache_dir,
                    force_download=force_download,
                    local_files_only=local_files_only,
                    token=token,
                    allow_patterns=ALLOW_PATTERNS,
                )
            )
        if not (folder / WEIGHTS_FILE).is_file():
            raise ModelLoadError(
                f"{model_id}: no {WEIGHTS_FILE}; medst.hub loads safetensors only (use medst.load for a "
                "checkpoint or a PyTorch weights file you trust)"
            )
        return cls(load(folder, device=device, precision=precision))

    def generate_model_card(  # type: ignore[override]
        self, results: str | Path | None = None, datasets: list[str] | None = None, **_ignored: Any
    ) -> ModelCard:
        """The README: a YAML metadata block (license, library, tags, ``datasets`` as the Hub names them, e.g.
        ``["mimic-cxr"]``, and the metrics of a ``medst eval`` ``results.json`` as a model index) above the
        export's own model card text. Pass these through ``save_pretrained(..., model_card_kwargs={...})``."""
        metrics = _eval_results(Path(results)) if results is not None else []
        card_data = ModelCardData(
            license=LICENSE,
            library_name="medst",
            tags=TAGS,
            datasets=datasets or None,
            pipeline_tag="zero-shot-image-classification",
            model_name="Med-ST",
            eval_results=metrics or None,
        )
        body = ""
        if self.encoder.source is not None and (self.encoder.source / "README.md").is_file():
            body = ModelCard((self.encoder.source / "README.md").read_text(encoding="utf-8")).text
        body = body.strip() or (
            "# Med-ST model (medst)\n\nSpatial and temporal vision-language pre-training on chest X-rays "
            "(Yang et al., ICML 2024). Not a medical device; research use only."
        )
        usage = (
            "\n\n## Loading\n\n```python\nfrom medst.hub import MedSTModel\n"
            "model = MedSTModel.from_pretrained(PATH_OR_HUB_ID)\n"
            "embeddings = model.encoder.encode_images([...])\n```\n"
        )
        return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}{usage}")


def _metric_type(metric: str) -> str:
    """The Hub's metric id for a medst metric name (``10-fold macro_accuracy/edema`` -> ``accuracy``)."""
    name = metric.lower()
    for key, hub_id in (("auroc", "roc_auc"), ("f1", "f1"), ("r@", "recall"), ("accuracy", "accuracy")):
        if key in name:
            return hub_id
    return name.split("/")[0].replace(" ", "_")


def _eval_results(path: Path) -> list[EvalResult]:
    """One model-index entry per finite metric of a ``medst eval`` ``results.json``."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: not a readable medst eval results.json ({err})") from err
    out = []
    for m in results.get("metrics", []):
        value = m.get("value")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        task_type, dataset_type, dataset_name = EVAL_TASKS.get(m["task"], ("other", m["task"], m["task"]))
        variant = "" if m.get("variant") in (None, "both") else f" ({m['variant']})"
        out.append(
            EvalResult(
                task_type=task_type,
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                metric_type=_metric_type(str(m["metric"])),
                metric_name=f"{m['metric']}{variant}",
                metric_value=round(float(value), 4),
            )
        )
    return out
