"""Configuration of `medst pretrain`: one Pydantic model, two named presets, YAML files and CLI overrides.

One source of truth: the field defaults of `PretrainConfig` *are* the paper recipe (SPEC section 4), and
`PRESETS["demo"]` lists only what the demo changes. A run resolves, in order: field defaults -> named preset ->
YAML file (which may name its own ``preset:``) -> command-line overrides; T (``seq_len``), when none of these sets it,
comes from the shards' build (``plan.json``). The result is written to ``RUN/config.yaml``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medst.errors import UserInputError
from medst.schemas.common import Precision
from medst.schemas.model import ModelConfig
from medst.schemas.shards import plan_build
from medst.storage import Location, is_url

# The paper's T: the window length of a run whose shards do not record the T they were built with.
DEFAULT_SEQ_LEN = 4
DeviceName = Literal["auto", "cpu", "cuda"]


class PretrainConfig(BaseModel):
    """Every option of a pre-training run. Defaults are the authors' recipe (SPEC section 4)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # What and where.
    shards: Location = Field(
        default=Path("shards"),
        description="folder written by `medst shard`: a path or a URL (s3://, https://)",
    )
    out: Path = Field(default=Path("run"), description="run folder: config, checkpoints, logs, export")
    preset: str = Field(default="paper", description="name of the preset this config started from")

    # Model.
    model_preset: Literal["paper", "tiny"] = Field(
        default="paper", description="the ModelConfig preset that `model` starts from"
    )
    model: ModelConfig = Field(
        default_factory=ModelConfig,
        description="the model: shapes, loss weights, compat; a YAML file or layer gives only the fields it "
        "changes from the model_preset (older flat keys such as lambda1, and model_overrides, still load)",
    )
    text_model: Path | None = Field(
        default=None,
        description="local Hugging Face BERT folder (default with the demo preset: a small BERT the run "
        "builds)",
    )
    build_demo_text_model: bool = Field(
        default=False,
        description="without --text-model, train a WordPiece tokenizer + tiny BERT on the shards",
    )
    demo_text_dropout: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="dropout of the demo BERT built by the run (tiny data, few steps)",
    )
    init_image: Path | None = Field(
        default=None, description="timm/DeiT or MGCA checkpoint for the image encoder"
    )

    # Data.
    seq_len: int = Field(
        default=DEFAULT_SEQ_LEN,
        ge=1,
        description="studies per window (T); `resolve_config` takes it from the shards' build (plan.json "
        "build.seq_len) unless a layer sets it, and uses this default only for shards without that record",
    )
    batch_size: int = Field(
        default=10,
        ge=2,
        description="windows per batch per rank (at least 2: in-batch negatives, batch norm)",
    )
    batch_size_auto: bool = Field(
        default=False,
        description="find the largest batch_size whose step fits in memory_share of the device's memory "
        "(searched up from batch_size before training; the result is written as batch_size)",
    )
    memory_share: float = Field(
        default=0.85, gt=0, le=1, description="share of the device's memory --batch-size auto may fill"
    )
    batch_size_max: int = Field(default=512, ge=2, description="largest batch_size --batch-size auto tries")
    random_offset: bool = Field(default=False, description="random window starts instead of fixed chunks")
    num_workers: int = Field(default=4, ge=0, description="loader worker processes")
    allow_partial: bool = Field(
        default=False, description="train although shards of the plan are missing (an incomplete --part set)"
    )
    skip_bad_samples: bool = Field(
        default=False,
        description="skip (and count) samples whose shard member is damaged instead of stopping",
    )
    train_split: str = "train"
    val_split: str = "validate"
    val_batches: int | None = Field(default=None, ge=1, description="cap on validation batches; None = all")

    # Length of training: exactly one of steps / epochs.
    steps: int | None = Field(default=None, ge=1, description="optimizer steps (instead of epochs)")
    epochs: float | None = Field(default=8.0, gt=0, description="passes over the training split")

    # Optimisation.
    lr: float = Field(default=4e-5, gt=0, description="peak learning rate")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_fraction: float = Field(default=0.4, ge=0, le=1)
    min_lr: float = Field(default=1e-8, ge=0)
    max_grad_norm: float | None = Field(
        default=None,
        gt=0,
        description="clip the gradient norm to this value (default: no clipping; 0 on the command line turns "
        "it off)",
    )
    accumulate: int = Field(default=1, ge=1, description="micro-batches per optimizer step")

    # Execution.
    precision: Precision = Field(default="auto", description="auto: bf16 autocast on CUDA, fp32 on the CPU")
    device: DeviceName = Field(default="auto", description="auto: CUDA when present")
    compile: bool = Field(default=False, description="compile the model with torch.compile")
    seed: int = Field(default=0, description="random seed of initialisation, data order and augmentation")
    find_unused_parameters: bool = Field(
        default=False, description="DDP: allow parameters without a gradient (MedST uses all of them)"
    )

    # Bookkeeping.
    log_every: int = Field(default=10, ge=1)
    val_every: int | None = Field(default=500, ge=1, description="validate every N steps (and at the end)")
    ckpt_every: int | None = Field(
        default=1000, ge=1, description="checkpoint every N steps (and at the end)"
    )
    keep_checkpoints: int | None = Field(default=3, ge=1, description="newest checkpoints kept; None = all")
    resume: str | None = Field(
        default=None,
        description="latest | a checkpoint folder; without --config the run's stored config is used, and options "
        "that would change its recipe are refused",
    )
    max_steps_this_invocation: int | None = Field(
        default=None,
        ge=1,
        description="stop after this many steps in this process (checkpointed; resume later)",
    )
    progress: bool = True
    tensorboard: bool = True
    export: bool = True
    loggers: list[Literal["tensorboard", "mlflow", "wandb", "none"]] | None = Field(
        default=None,
        description="experiment trackers, repeatable (default: tensorboard when installed; metrics.jsonl and "
        "curves.png are always written, and are all that none writes)",
    )
    experiment: str | None = Field(
        default=None,
        description="MLflow experiment / W&B project (default: MLFLOW_EXPERIMENT_NAME / WANDB_PROJECT, else medst)",
    )

    @model_validator(mode="before")
    @classmethod
    def _model_from_preset(cls, data: Any) -> Any:
        """The model section: the model_preset's ModelConfig, then the older flat keys and ``model_overrides``
        (config.yaml files of runs written before the model was nested), then the ``model`` fields given."""
        if not isinstance(data, dict):
            return data
        legacy = "model_overrides" in data or any(key in data for key in FLAT_MODEL_FIELDS)
        if isinstance(data.get("model"), ModelConfig) and not legacy:
            return data  # already built (e.g. assigning another field re-runs this validator)
        data = nest_model_options(data)
        base = ModelConfig.preset(str(data.get("model_preset", "paper"))).model_dump(by_alias=True)
        data["model"] = ModelConfig.model_validate(_deep_merge(base, data.get("model", {})))
        return data

    @model_validator(mode="after")
    def _one_length(self) -> PretrainConfig:
        if self.steps is None and self.epochs is None:
            raise ValueError("set either steps or epochs")
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set only one of steps and epochs")
        return self


class RunSummary(BaseModel):
    """What a finished (or deliberately stopped) run reports (`medst.train.loop.pretrain`); written into the
    export's config.json under ``summary``."""

    run_dir: Path
    steps: int = 0
    total_steps: int = 0
    epochs: float = 0.0
    world_size: int = 1
    wall_s: float = 0.0
    train_s: float = 0.0
    studies: int = 0
    studies_per_s: float = 0.0
    first_loss: float | None = None
    last_loss: float | None = None
    val: dict[str, float] = Field(default_factory=dict)
    last_checkpoint: Path | None = None
    export_dir: Path | None = None
    stopped_early: bool = False
    #: The signal (SIGINT / SIGTERM) that stopped the run after a checkpoint, 0 when none did (`medst.train.stopping`).
    stop_signal: int = 0
    weights_sha256: str = ""


# Model fields a training config (and the command line) may still give at the top level, as before the model was
# nested in the training config.
FLAT_MODEL_FIELDS = ("lambda1", "lambda2", "compat", "lateral_init", "grad_checkpointing", "gather_negatives")


def nest_model_options(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its flat model keys (`FLAT_MODEL_FIELDS`) and dotted ``model_overrides`` moved into a
    ``model`` mapping of the fields given (a partial ModelConfig), on top of any ``model`` it already has."""
    data = dict(data)
    given = data.pop("model", None)
    model: dict[str, Any] = (
        given.model_dump(by_alias=True) if isinstance(given, BaseModel) else dict(given or {})
    )
    for key in FLAT_MODEL_FIELDS:
        if key in data:
            model[key] = data.pop(key)
    for dotted, value in (data.pop("model_overrides", None) or {}).items():
        node = model
        *parents, leaf = str(dotted).split(".")
        for key in parents:
            node[key] = node = dict(node.get(key) or {})
        node[leaf] = value
    if model or given is not None:
        data["model"] = model
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = (
            _deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


# Fields that may change between a run and its resumption without changing the result (``--resume`` accepts other
# values for these; any other option that differs from the run's recipe is refused).
RESUMABLE_CHANGES = frozenset(
    {
        "resume", "max_steps_this_invocation", "progress", "tensorboard", "num_workers", "device", "out",
        "shards", "log_every", "val_every", "ckpt_every", "keep_checkpoints", "export", "compile",
        "val_batches", "skip_bad_samples", "loggers", "experiment",
        # --batch-size auto searches only when a run starts; a resumed run keeps the batch_size it recorded.
        "memory_share", "batch_size_max",
    }
)  # fmt: skip

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Tiny ViT + tiny BERT that learn on the synthetic archive in a few CPU minutes.
    "demo": {
        "model_preset": "tiny",
        "build_demo_text_model": True,
        # ~90 studies per batch: at 8 windows (~22 studies) the global loss stayed at its chance level
        # (2 ln 22 = 6.2) and the projection heads' BatchNorm statistics were too noisy to learn from.
        "batch_size": 32,
        # Loading in the training process: an epoch is a few dozen steps here, and a loader worker started for
        # every epoch cost more time than the decoding it saved (15 vs ~100 studies/s on 2 cores).
        "num_workers": 0,
        "steps": 600,
        "epochs": None,
        "lr": 5e-4,
        "weight_decay": 0.01,
        "warmup_fraction": 0.1,
        "max_grad_norm": 1.0,
        "precision": "fp32",
        "log_every": 10,
        "val_every": 100,
        "ckpt_every": 100,
        "val_batches": 8,
    },
}


def _load_file(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise UserInputError(
            f"config file not found: {path} (give a preset name {sorted(PRESETS)} or a YAML file)"
        )
    if path.suffix.lower() == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError as err:  # Python 3.10
            raise UserInputError(f"{path}: TOML configs need Python 3.11+; use YAML") from err
        data = tomllib.loads(path.read_text())
    else:
        with path.open() as f:
            data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise UserInputError(f"config file {path} must hold a mapping of option: value")
    return data


def resolve_config(
    config: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> PretrainConfig:
    """Resolve a run's config: defaults -> preset -> YAML file -> overrides (``None`` values are ignored).

    T (``seq_len``) set by no layer is the T of the build the shards were made from (``build.seq_len`` of
    ``shards/plan.json``), or `DEFAULT_SEQ_LEN` when the plan does not record one.

    ``config`` is a preset name (``paper``, ``demo``) or a YAML (or TOML) file of `PretrainConfig` fields, which may name a
    base with ``preset: NAME``. Setting ``steps`` in a later layer clears ``epochs`` and the other way round.
    Raises `UserInputError` naming the bad option.
    """
    layers: list[dict[str, Any]] = []
    name = "paper" if config is None else str(config)
    if name in PRESETS:
        layers.append({"preset": name, **PRESETS[name]})
    else:
        data = _load_file(Path(name))
        base = str(data.get("preset", "paper"))
        if base not in PRESETS:
            raise UserInputError(f"{name}: unknown preset {base!r}; known presets: {sorted(PRESETS)}")
        layers.append({"preset": base, **PRESETS[base]})
        layers.append(data)
    layers.append({k: v for k, v in (overrides or {}).items() if v is not None})

    resolved = _merge(layers)
    if all(layer.get("seq_len") is None for layer in layers):
        # One T: the window length the shards' build cut its sequences with, unless a layer asked for another.
        build = plan_build(resolved.shards)
        if build is not None:
            resolved.seq_len = build.seq_len
    return resolved


def _merge(layers: list[dict[str, Any]]) -> PretrainConfig:
    merged: dict[str, Any] = {}
    for layer in layers:
        if "steps" in layer and layer["steps"] is not None:
            merged["epochs"] = None
        if "epochs" in layer and layer["epochs"] is not None:
            merged["steps"] = None
        layer = nest_model_options(layer)
        if "model" in layer:
            layer["model"] = _deep_merge(merged.get("model", {}), layer["model"])
        merged.update(layer)
    try:
        return PretrainConfig(**merged)
    except ValueError as err:  # pydantic.ValidationError is a ValueError
        raise UserInputError(f"invalid pretrain config: {err}") from err


# Fields that belong to one invocation, not to the run: a resumed run does not take them from its stored config.
PER_INVOCATION = ("resume", "max_steps_this_invocation")


def stored_run_config(out: Path, resume: str) -> Path | None:
    """The config file a run resumed without ``--config`` continues with: ``RUN/config.yaml`` for
    ``--resume latest``, the checkpoint's own ``config.yaml`` for ``--resume FOLDER``; None when there is none
    (``--resume latest`` into a new folder starts a fresh run)."""
    path = (out if resume == "latest" else Path(resume)) / "config.yaml"
    return path if path.is_file() else None


def resolve_resumed_config(stored: Path, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """The config of a resumed run: the run's stored config (``stored``, from `stored_run_config`) with the
    command-line ``overrides`` (``None`` values ignored) on top; ``resume`` and ``max_steps_this_invocation`` are
    not carried over from the stored file.

    Raises `UserInputError` naming the first option whose value differs from the stored recipe, unless it is one
    of `RESUMABLE_CHANGES` (paths, logging, checkpoint cadence, workers, device, per-invocation limits), and
    one naming a relative path of an older stored config that the current directory does not hold.
    """
    data = {k: v for k, v in _load_file(stored).items() if k not in PER_INVOCATION}
    base = str(data.get("preset", "paper"))
    if base not in PRESETS:
        raise UserInputError(f"{stored}: unknown preset {base!r}; known presets: {sorted(PRESETS)}")
    recipe = _merge([{"preset": base, **PRESETS[base]}, data])
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_stored_relative_paths(stored, data, given)
    config = _merge([recipe.model_dump(), given])
    old, new = _flat(recipe.model_dump(mode="json")), _flat(config.model_dump(mode="json"))
    for name in config_differences(recipe, config):
        field = name.removeprefix("model.")
        option = "--" + field.replace("_", "-") if "." not in field else name
        raise UserInputError(
            f"{option} {new[name]} differs from the run's recipe ({name}: {old[name]} in {stored}); "
            f"resume without {option}, or start a new run with a new -o folder"
        )
    return config


# The command-line spelling of each local path field, for messages about a stored config (``out`` is always given).
_PATH_OPTIONS = {"shards": "the SHARDS argument", "text_model": "--text-model", "init_image": "--init-image"}


def local_paths(config: PretrainConfig) -> dict[str, Path]:
    """The config's fields that hold a local path (URLs, which are `RemotePath`s, and unset fields left out)."""
    return {
        name: value for name in type(config).model_fields if isinstance(value := getattr(config, name), Path)
    }


def _absolute(path: Path) -> Path:
    # Lexically absolute ("a/../b" -> "CWD/b"); symlinks are kept as the user named them.
    return Path(os.path.abspath(path))


def with_absolute_paths(config: PretrainConfig) -> PretrainConfig:
    """``config`` with every local path field made absolute against the current directory (URLs unchanged):
    what a run stores in ``config.yaml``, so that it resumes from any working directory."""
    return config.model_copy(update={name: _absolute(path) for name, path in local_paths(config).items()})


def _check_stored_relative_paths(stored: Path, data: dict[str, Any], given: dict[str, Any]) -> None:
    """An older run's config.yaml holds paths as typed (relative to a working directory it does not record); they
    are read from the current directory, and one that is not there is named here instead of failing later."""
    for name, option in _PATH_OPTIONS.items():
        value = data.get(name)
        if name in given or not isinstance(value, str) or is_url(value):
            continue
        path = Path(value)
        if not path.is_absolute() and not path.exists():
            raise UserInputError(
                f"{name} {value} (relative, in {stored}) does not exist in the current directory {Path.cwd()}: "
                f"resume from the directory the run was started in, or give the path again with {option}"
            )


def config_to_yaml(config: PretrainConfig) -> str:
    """The config as YAML text (paths as strings), loadable again with `resolve_config`."""
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_differences(old: PretrainConfig, new: PretrainConfig) -> list[str]:
    """Names of fields that differ between two configs and would change a resumed run's result; a field of the
    model is named with its path (``model.lambda1``, ``model.text.layers``)."""
    # A path stored absolute and the same path given again relative to the current directory are one recipe.
    a = _flat(with_absolute_paths(old).model_dump(mode="json"))
    b = _flat(with_absolute_paths(new).model_dump(mode="json"))
    return sorted(k for k in a if k not in RESUMABLE_CHANGES and a[k] != b.get(k))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"lambda1": 1.0}}`` -> ``{"model.lambda1": 1.0}`` (only mappings are opened)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
