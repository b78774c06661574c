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
