"""The archive-reader registry: every source `medst build-sequences` can read, one `ArchiveReader` each.

A reader declares its name, a one-line summary, where its data comes from and on what terms (the citation and
the access conditions a user has agreed to before holding such an archive), the data manifests it is checked
against, how to recognise its archive, and the function that reads it into `SourceData`. `READERS` lists them
in detection order: the first whose ``detect`` says yes reads the archive, unless ``--reader`` names one.

Adding a source is one module (``medst/archive/<name>.py`` with its ``read_<name>(config, progress)``) and one
entry here. The command line lists these names for ``--reader`` (choices, help, completion), so this module stays
light to import: a reader's module (polars, pydicom) is imported inside its ``detect`` and ``read`` functions, and
`tests/test_archive_readers.py` checks that importing the registry loads neither.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from medst.errors import UserInputError
from medst.schemas.build import BuildConfig

if TYPE_CHECKING:
    from medst.archive.source import SourceData


@dataclass(frozen=True)
class ArchiveReader:
    """One archive source: what it is, where it comes from, and how to recognise and read it."""

    name: str
    """What ``--reader`` and the build report call it."""
    summary: str
    """One line: what archive this reads."""
    citation: str
    """Where the data comes from (the paper or release to cite), or who it belongs to."""
    access: str
    """The terms a user holds the data under (credentialing, data use agreement, licence)."""
    expects: str
    """What it needs to recognise an archive, for the message when no reader does (after "<name> reads ...")."""
    manifests: tuple[str, ...]
    """Names of the data manifests (``data_manifests/<name>.yaml``) an archive of this source is checked against."""
    detect: Callable[[Path, BuildConfig], bool]
    """True when the archive at ``root`` (with these options) is one this reader reads."""
    read: Callable[[BuildConfig, bool], SourceData]
    """``read(config, progress)``: the archive, read (rejects included); raises `UserInputError` on bad input."""

    @property
    def doc(self) -> str:
        """Summary, citation and access terms as one text (what ``medst build-sequences --help`` could show)."""
        return f"{self.name}: {self.summary}\nData: {self.citation}\nAccess: {self.access}"


def _detect_generic(root: Path, config: BuildConfig) -> bool:
    return config.table is not None


def _read_generic(config: BuildConfig, progress: bool = True) -> SourceData:
    if config.table is None:
        raise UserInputError(
            "--reader generic needs --table FILE --columns patient=...,image=...,time=... (the table of images)"
        )
    from medst.archive.generic import read_generic

    return read_generic(config, progress)


def _detect_mimic(root: Path, config: BuildConfig) -> bool:
    from medst.archive.mimic import is_mimic_archive

    return config.table is None and is_mimic_archive(root)


def _read_mimic(config: BuildConfig, progress: bool = True) -> SourceData:
    from medst.archive.mimic import read_mimic

    return read_mimic(config, progress)


GENERIC = ArchiveReader(
    name="generic",
    summary="any archive described by a table with one row per image (--table, --columns)",
    citation="the user's own archive: cite and credit it as its owners ask",
    access="whatever terms the user's archive is held under (its data use agreement, ethics approval or "
    "licence); medst copies only pseudonymous ids, day offsets, report text and pixels out of it",
    expects="an archive given as --table FILE --columns patient=...,image=...,time=...",
    manifests=(),
    detect=_detect_generic,
    read=_read_generic,
)

MIMIC_CXR = ArchiveReader(
    name="mimic-cxr",
    summary="MIMIC-CXR 2.0.0 (DICOM release) or MIMIC-CXR-JPG 2.0.0: tables, files/ tree, sNNN.txt reports",
    citation="Johnson AEW, Pollard TJ, Berkowitz SJ, et al. MIMIC-CXR, a de-identified publicly available "
    "database of chest radiographs with free-text reports. Sci Data 6, 317 (2019); the JPG release: Johnson "
    "et al., MIMIC-CXR-JPG, arXiv:1901.07042; both distributed by PhysioNet (physionet.org/content/mimic-cxr, "
    "physionet.org/content/mimic-cxr-jpg)",
    access="PhysioNet credentialed access: a credentialed PhysioNet account, the required human-subjects "
    "research training, and the signed PhysioNet Credentialed Health Data Use Agreement (DUA); the data may "
    "not be shared with anyone who has not agreed to the DUA",
    expects="a MIMIC-CXR release (cxr-record-list / metadata CSV / files/ tree)",
    manifests=("mimic-cxr-2.0.0", "mimic-cxr-jpg-2.0.0", "medst-synth"),
    detect=_detect_mimic,
    read=_read_mimic,
)

READERS: dict[str, ArchiveReader] = {reader.name: reader for reader in (GENERIC, MIMIC_CXR)}
"""Name -> reader, in detection order (an explicit --table wins over the look of the folder)."""


def pick_reader(config: BuildConfig) -> ArchiveReader:
    """The reader named by ``config.reader``, or the first in `READERS` that recognises ``config.archive``.

    Raises `UserInputError` for an unknown name, and when no reader recognises the archive."""
    if config.reader is not None:
        if config.reader not in READERS:
            raise UserInputError(f"unknown --reader {config.reader!r}; choose one of {', '.join(READERS)}")
        return READERS[config.reader]
    for reader in READERS.values():
        if reader.detect(config.archive, config):
            return reader
    known = "; ".join(f"{reader.name} reads {reader.expects}" for reader in READERS.values())
    raise UserInputError(f"no archive reader recognises {config.archive} ({known})")
