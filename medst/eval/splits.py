"""The RSNA stage-2 patient split (70/15/15, seed 0) described by a manifest in ``data_manifests/``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medst.errors import UserInputError

RSNA_MANIFEST_NAME = "rsna_split_seed0.yaml"


def default_manifest_path(name: str = RSNA_MANIFEST_NAME) -> Path:
    """The shipped manifest: ``medst/data_manifests/`` when installed as package data, else the repo's folder."""
    here = Path(__file__).resolve()
    for folder in (here.parents[1] / "data_manifests", here.parents[2] / "data_manifests"):
        if (folder / name).is_file():
            return folder / name
    raise UserInputError(f"RSNA split manifest {name} not found next to the medst package; pass --rsna-split")


def load_manifest(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserInputError(f"RSNA split manifest not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "seed" not in data:
        raise UserInputError(f"RSNA split manifest {path} is not a mapping with a 'seed' field")
    return data


def patients_sha256(patient_ids: list[str]) -> str:
    """sha256 of the sorted ids joined by newlines: the checksum stored in the manifest."""
    return hashlib.sha256("\n".join(sorted(patient_ids)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RsnaSplit:
    test_patients: list[str]
    checksum: str
    matches_real_release: bool  # the input has the real stage-2 patient count
    note: str


def rsna_test_split(patient_ids: list[str], manifest: dict[str, Any]) -> RsnaSplit:
    """The test patients of ``patient_ids`` (sorted) by the manifest's list or its procedure.

    Raises `UserInputError` when the input looks like the real release but the resulting list does not match
    the manifest's checksum (the split would not be the published one).
    """
    from sklearn.model_selection import train_test_split

    explicit = manifest.get("test_patients")
    expected = manifest.get("expected") or {}
    real = len(patient_ids) == expected.get("n_patients")
    if explicit:
        known = set(patient_ids)
        test = sorted(p for p in explicit if p in known)
        note = f"test patients from the manifest list ({len(test)} of {len(explicit)} present)"
    else:
        seed = int(manifest["seed"])
        frac = manifest.get("fractions", {})
        holdout = float(frac.get("validate", 0.15)) + float(frac.get("test", 0.15))
        ids = sorted(patient_ids)
        if len(ids) < 4:
            raise UserInputError(
                f"RSNA: only {len(ids)} patients in the labels file; need at least 4 to split"
            )
        _train, rest = train_test_split(ids, test_size=holdout, random_state=seed)
        test, _validate = train_test_split(rest, test_size=0.5, random_state=seed)
        test = sorted(test)
        note = f"split by the manifest procedure (seed {seed}) over {len(ids)} patients"
    checksum = patients_sha256(test)
    want = expected.get("test_patients_sha256")
    if real and want and want != checksum:
        raise UserInputError(
            f"RSNA: the test split's checksum {checksum[:12]} differs from the manifest's {str(want)[:12]}; "
            "the labels file is not the published stage-2 file"
        )
    if not real:
        note += " (not the real stage-2 release: patient count differs from the manifest)"
    return RsnaSplit(test_patients=test, checksum=checksum, matches_real_release=real, note=note)
