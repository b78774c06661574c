"""Experiment trackers a run reports to besides ``metrics.jsonl`` and ``curves.png``: a registry, name -> class.

Each tracker is optional (a pip extra) and honours one small contract: ``log_params(params)`` once,
``log_metrics(step, values)`` per logged step (keys like ``train/loss``), ``log_artifact(path)`` for files such as
``curves.png``, and ``close(failed)``: ``failed=True`` when training raised, which ends the tracker's run with its
failed status where it has one (MLflow ``FAILED``, W&B exit code 1). Only rank 0 creates trackers (`medst.train.logging.RunLogger`).

- ``tensorboard``: event files in ``RUN/tensorboard`` (the default when TensorBoard is installed).
- ``mlflow``: a run in ``MLFLOW_TRACKING_URI``, or a local file store ``RUN/mlruns`` when unset (MLflow 3 asks
  for ``MLFLOW_ALLOW_FILE_STORE=true`` to open one; we set it unless it is set); experiment from
  the config, else ``MLFLOW_EXPERIMENT_NAME``, else ``medst``; run name = the run folder's name.
- ``wandb``: a Weights & Biases run with files under ``RUN/wandb``; ``WANDB_MODE`` is respected, and without it the
  run is offline unless an API key is configured (``WANDB_API_KEY`` or a netrc entry), so nothing is sent unasked.

A resumed run continues the same MLflow and W&B run: their ids are kept in ``RUN/trackers.json``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from medst.errors import UserInputError

TRACKERS_FILE = "trackers.json"
"""Ids of the tracker runs of a run folder, so a resumed run reports to the same ones."""

DEFAULT_EXPERIMENT = "medst"


def _load_ids(run_dir: Path) -> dict[str, str]:
    path = run_dir / TRACKERS_FILE
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def _save_id(run_dir: Path, name: str, run_id: str) -> None:
    ids = {**_load_ids(run_dir), name: run_id}
    tmp = run_dir / f".{TRACKERS_FILE}.partial"
    tmp.write_text(json.dumps(ids, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, run_dir / TRACKERS_FILE)


def flatten_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config values as flat ``a.b`` keys with string values (what every tracker's params accept)."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = "" if value is None else str(value)
    return flat


class Tracker:
    """Base of the registry entries: ``name``, the ``module`` whose import makes it usable, its pip ``extra``."""

    name: ClassVar[str]
    module: ClassVar[str]
    extra: ClassVar[str]

    def __init__(self, run_dir: Path, start_step: int, experiment: str | None) -> None:
        """Start a run for ``run_dir`` (or continue the one recorded there), reporting from ``start_step`` on."""

    @classmethod
    def available(cls) -> bool:
        try:
            importlib.import_module(cls.module)
        except ImportError:
            return False
        return True

    def log_params(self, params: dict[str, Any]) -> None:
        """Record the run's config (nested dicts are flattened to dotted keys)."""

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        """Record the numbers of one logged step (non-finite values are left out)."""

    def log_artifact(self, path: Path) -> None:
        """Attach a file of the run folder (e.g. ``curves.png``)."""

    def close(self, failed: bool = False) -> None:
        """Flush and end the tracker's run; ``failed``: training raised, so the run ends as failed."""


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if math.isfinite(float(v))}


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    module = "torch.utils.tensorboard"  # torch's writer, which needs the tensorboard package
    extra = "tensorboard"

    def __init__(self, run_dir: Path, start_step: int, experiment: str | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # Events after the resumed step are dropped, so a resumed run draws no doubled line.
        self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def log_params(self, params: dict[str, Any]) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in sorted(flatten_params(params).items()))
        self._writer.add_text("config", text)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)

    def close(self, failed: bool = False) -> None:
        self._writer.close()  # TensorBoard has no run status: the events so far are kept


class MlflowTracker(Tracker):
    name = "mlflow"
    module = "mlflow"
    extra = "mlflow"

    def __init__(self, run_dir: Path, start_step: int, experiment: str | None) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (run_dir / "mlruns").resolve().as_uri()
            # MLflow 3 keeps the file store (it needs no database packages, so mlflow-skinny suffices) behind an
            # opt-in; the user chose a run folder, not a server, so we opt in unless they said otherwise.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._client = MlflowClient(tracking_uri=uri)
        self.tracking_uri = uri
        run_id = _load_ids(run_dir).get(self.name)
        self._known: dict[str, str] = {}
        if run_id is not None and self._exists(run_id):
            self.run_id = run_id
            self._client.update_run(run_id, status="RUNNING")
            self._known = dict(self._client.get_run(run_id).data.params)
        else:
            name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
            found = self._client.get_experiment_by_name(name)
            experiment_id = found.experiment_id if found is not None else self._client.create_experiment(name)
            self.run_id = self._client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            _save_id(run_dir, self.name, self.run_id)

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        # MLflow refuses to change a logged param: a resumed run only adds the keys its first part lacked
        # (the options that may change on resume, such as --max-steps-this-invocation, keep their first value).
        flat = {k: v[:6000] for k, v in flatten_params(params).items() if k not in self._known}
        items = [Param(k, v) for k, v in sorted(flat.items())]
        for start in range(0, len(items), 100):  # log_batch takes at most 100 params per call
            self._client.log_batch(self.run_id, params=items[start : start + 100])
        self._known.update(flat)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in _finite(values).items()]
        if metrics:
            self._client.log_batch(self.run_id, metrics=metrics)

    def log_artifact(self, path: Path) -> None:
        self._client.log_artifact(self.run_id, str(path))

    def close(self, failed: bool = False) -> None:
        self._client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    name = "wandb"
    module = "wandb"
    extra = "wandb"

    def __init__(self, run_dir: Path, start_step: int, experiment: str | None) -> None:
        import wandb

        run_id = _load_ids(run_dir).get(self.name) or secrets.token_hex(4)
        _save_id(run_dir, self.name, run_id)
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_has_key() else "offline")
        self._run = wandb.init(
            project=experiment or os.environ.get("WANDB_PROJECT") or DEFAULT_EXPERIMENT,
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=mode,  # type: ignore[arg-type]
        )
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        self._run.config.update(params, allow_val_change=True)

    def log_metrics(self, step: int, values: dict[str, float]) -> None:
        self._run.log(_finite(values), step=step)

    def log_artifact(self, path: Path) -> None:
        self._run.save(str(path), base_path=str(path.parent), policy="now")

    def close(self, failed: bool = False) -> None:
        self._run.finish(exit_code=1 if failed else 0)


TRACKERS: dict[str, type[Tracker]] = {
    cls.name: cls for cls in (TensorBoardTracker, MlflowTracker, WandbTracker)
}
"""The registry: adding a tracker is one class here plus one entry."""

LOGGER_CHOICES = (*TRACKERS, "none")


def resolve_trackers(requested: Iterable[str] | None, tensorboard: bool = True) -> list[str]:
    """The trackers a run uses: ``requested`` (``none`` alone means only ``metrics.jsonl``), or by default
    TensorBoard when it is installed and ``tensorboard`` is on. Raises `UserInputError` for an unknown name, ``none``
    mixed with others, or a requested tracker whose package is missing (naming its pip extra)."""
    if requested is None:
        return ["tensorboard"] if tensorboard and TRACKERS["tensorboard"].available() else []
    names = list(dict.fromkeys(requested))
    unknown = [n for n in names if n not in LOGGER_CHOICES]
    if unknown:
        raise UserInputError(f"unknown logger {unknown[0]!r}; choose from {', '.join(LOGGER_CHOICES)}")
    if "none" in names:
        if len(names) > 1:
            raise UserInputError("--logger none cannot be combined with other loggers")
        return []
    for name in names:
        if not TRACKERS[name].available():
            raise UserInputError(
                f"--logger {name} needs an optional package that is not installed: "
                f"pip install 'medst[{TRACKERS[name].extra}]'"
            )
    return names


def open_trackers(
    names: list[str], run_dir: Path, start_step: int, experiment: str | None = None
) -> list[Tracker]:
    """Start (or, for a resumed run folder, continue) the named trackers."""
    return [TRACKERS[name](run_dir, start_step, experiment) for name in names]
