"""Shared fixtures: paths to real data beside the project, and small synthetic archives built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep each test process to one thread per library: CI has 2 cores and runs 2 pytest workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real public data folder (../shared/realdata); tests using it skip when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder not present at {REALDATA} (CI always has it)")
    return REALDATA


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic archive (24 patients, 256 px, DICOM at the root + JPG release under jpg/, benchmark sets
    under benchmarks/), generated once per test process. Holds every transfer syntax, photometric interpretation
    and view variant of `medst synth` at least once. Treat it as read-only."""
    from medst.schemas.synth import SynthConfig
    from medst.synth import generate

    out = tmp_path_factory.mktemp("synth") / "archive"
    generate(SynthConfig(out=out, patients=24, seed=0, image_size=256, release="both", benchmarks=True),
             progress=False)
    return out


# The files whose tests take longest (`pytest --durations`), started first: `make test` hands whole files to its
# two workers in collection order, so a long file collected last keeps one worker busy after the other is done.
LONG_FILES = (
    "test_gpu_scripts.py",
    "test_train_multinode.py",
    "test_executors.py",
    "test_train_stop.py",
    "test_reliability_pipeline.py",
    "test_storage.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: the rest keep their order
