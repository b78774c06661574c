"""One home per setting (issue 17 item 4): an option that fills a config field defaults to None ("not given"), so the
field's default in ``schemas/`` is the only default, and its ``--help`` shows that default, read from the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel
from typer.testing import CliRunner

from medst.cli.app import app
from medst.cli.options import schema_default, shown_default
from medst.schemas.build import BuildConfig
from medst.schemas.demo import DemoConfig
from medst.schemas.embed import EmbedConfig
from medst.schemas.eval import EvalConfig
from medst.schemas.model import ModelConfig
from medst.schemas.shards import ShardConfig
from medst.schemas.synth import SynthConfig
from medst.schemas.train import PretrainConfig

GROUP: Any = typer.main.get_command(app)

# The config each command builds, and the options whose flag is not the field's name with dashes.
CONFIGS: dict[str, tuple[type[BaseModel], ...]] = {
    "synth": (SynthConfig,),
    "build-sequences": (BuildConfig,),
    "shard": (ShardConfig,),
    "pretrain": (PretrainConfig, ModelConfig),  # the model's options fill PretrainConfig.model
    "eval": (EvalConfig,),
    "embed": (EmbedConfig,),
    "demo": (DemoConfig,),
}
RENAMED = {
    ("shard", "--shard-timeout"): "shard_timeout_s",
    ("pretrain", "--workers"): "num_workers",
    ("pretrain", "--logger"): "loggers",
    ("eval", "--task"): "tasks",
    ("eval", "--split"): "retrieval_split",
}
# Where the command line spells a default differently from the field's value.
SPELLED = {
    ("shard", "--part"): "0/1",
    ("eval", "--task"): "all",
    ("pretrain", "--seq-len"): "the T the shards were built with, else 4",
}
# A few that must be found, so that a renamed flag cannot make this test pass by finding nothing.
EXPECTED = {
    "synth": {"--patients", "--image-size", "--release", "--workers"},
    "build-sequences": {"--seq-len", "--compat", "--workers", "--min-kept", "--keep-non-chest"},
    "shard": {"--image-size", "--preset", "--part", "--shard-timeout", "--key-salt", "--engine"},
    "pretrain": {
        "--lambda1",
        "--gather-negatives",
        "--lr",
        "--batch-size",
        "--workers",
        "--num-workers",
        "--logger",
        "--lateral-init",
        "--compile",
    },
    "eval": {"--task", "--split", "--out", "--seeds", "--bootstrap", "--device"},
    "embed": {"--model", "--batch-size", "--threads", "--workers", "--preset"},
    "demo": {"--out", "--patients", "--seed", "--workers"},
}


def _mapped(command: str) -> dict[str, tuple[Any, type[BaseModel], str]]:
    """Long flag -> (click option, config, field) for every option of ``command`` that fills a field."""
    found = {}
    for param in GROUP.commands[command].params:
        if param.param_type_name != "option":
            continue
        flag = next(o for o in param.opts if o.startswith("--"))
        name = RENAMED.get((command, flag), flag[2:].replace("-", "_"))
        config = next((c for c in CONFIGS[command] if name in c.model_fields), None)
        if config is not None:
            found[flag] = (param, config, name)
    return found


def _shown(help_text: str) -> str | None:
    match = re.search(r"\[default: ([^\]]*)\]$", help_text)
    return match.group(1) if match else None


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_options_that_fill_a_field_are_not_given_by_default_and_show_the_schema_default(command: str) -> None:
    mapped = _mapped(command)
    assert EXPECTED[command] <= set(mapped), EXPECTED[command] - set(mapped)
    for flag, (param, config, name) in mapped.items():
        if param.required:  # no default to drift (and a field without a default must be given)
            continue
        assert not config.model_fields[name].is_required(), (command, flag)
        assert param.default is None, f"{command} {flag} has its own default {param.default!r}"
        if param.hidden:  # an older spelling: not in --help
            continue
        expected = SPELLED.get((command, flag), shown_default(schema_default(config, name)))
        assert _shown(param.help or "") == expected, (command, flag, param.help)


def test_shown_defaults_read_as_on_the_command_line() -> None:
    shard = {flag: _shown(p.help) for flag, (p, _, _) in _mapped("shard").items()}
    assert shard["--image-size"] == "512" and shard["--part"] == "0/1" and shard["--force"] == "off"
    assert shard["--ray-address"] is None  # a None default is described, not shown
    evaluate = {flag: _shown(p.help) for flag, (p, _, _) in _mapped("eval").items()}
    assert evaluate["--seeds"] == "42,100,666" and evaluate["--out"] == "eval_out"


def test_not_given_options_leave_the_schema_defaults(tmp_path: Path) -> None:
    """`pretrain --print-config` shows the resolved config: not-given options leave the preset's values."""
    result = CliRunner().invoke(app, ["pretrain", "shards", "-o", str(tmp_path), "--print-config"])
    assert result.exit_code == 0, result.output
    assert "lr: 4.0e-05" in result.output and "lateral_init: random" in result.output
    given = CliRunner().invoke(
        app, ["pretrain", "shards", "-o", str(tmp_path), "--print-config", "--lateral-init", "copy"]
    )
    assert "lateral_init: copy" in given.output
