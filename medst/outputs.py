"""Output folders are medst's alone: every command that writes a folder claims it first.

Public API (every command with an output folder or file calls one of these before any work):

- ``claim_output_dir(out, command, *, inputs=(), roots=(), fingerprint=None, legacy_markers=()) -> OutputDir``
  Creates ``out`` if absent and writes the marker ``out/.medst-output.json`` (command, medst version, input paths,
  fingerprint). Accepts an absent or empty folder (claims it), or a folder whose marker names the same command
  (a re-run: the caller replaces or resumes). Raises `UserInputError` (one line) for: an existing file; a folder
  holding files but no medst marker (unless one of ``legacy_markers``, files that an older medst wrote for this
  command, is there); a folder whose marker names another command; ``out`` equal to, inside or containing one of
  ``inputs``, or equal to or containing one of ``roots`` (folders that files are read from by path, such as an
  image root: ``--image-root /`` is fine). It never moves or deletes anything.
- ``check_output_dir(...)``: the same checks, read-only (for processes that must not write, e.g. DDP ranks > 0).
- ``OutputDir.replacing()``: a context manager yielding an empty staging folder inside ``out``; on success each
  entry written there is swapped into ``out`` by renames inside ``out`` (the previous run's entries are moved
  aside first and deleted last), and the marker records the entries. Each entry moves by one rename; while they
  move the marker says ``"complete": false`` and lists old and new entries, so a crash there is repaired by the
  next run. On failure before the swap the staging folder is removed and ``out`` keeps the previous outputs. Files in ``out`` that a previous run of this command did not write
  survive. Nothing outside ``out`` is ever moved or deleted.
- ``OutputDir.finish(fingerprint=None)``: record that the command completed (commands writing in place).
- ``OutputDir.release_if_unused()``: on a failure before any output, remove the folder this claim created.
- ``check_output_file(out, inputs=())``: for commands whose ``-o`` is one file: refuses a folder there and an
  ``out`` that is one of the inputs, before any work.

The marker is JSON: ``{"command", "medst_version", "inputs", "fingerprint", "entries", "complete"}``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medst._version import __version__
from medst.errors import UserInputError

MARKER = ".medst-output.json"
_STAGING = ".staging-"


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(path)))


def _overlap(out: Path, inputs: Sequence[Path | None], roots: Sequence[Path | None]) -> None:
    o = out.resolve()
    for raw in [*inputs, *roots]:
        if raw is None:
            continue
        inp = _resolved(Path(raw)).resolve()
        if o == inp:
            raise UserInputError(f"output {out} is the input {raw}; give a new output folder")
        if inp in o.parents and raw not in roots:
            raise UserInputError(f"output {out} is inside the input {raw}; give a folder outside it")
        if o in inp.parents:
            raise UserInputError(
                f"output {out} contains the input {raw}; give a folder that does not hold it"
            )


def _read_marker(out: Path) -> dict[str, Any] | None:
    path = out / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserInputError(f"{path} is damaged; remove it if {out} is a medst output folder") from None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        raise UserInputError(f"{path} is damaged; remove it if {out} is a medst output folder")
    return data


def _foreign_entries(out: Path) -> list[str]:
    # Marker temporaries of a concurrent claim (another DDP rank) are not foreign.
    return sorted(p.name for p in out.iterdir() if not p.name.startswith(MARKER))


def check_output_dir(
    out: Path,
    command: str,
    *,
    inputs: Sequence[Path | None] = (),
    roots: Sequence[Path | None] = (),
    legacy_markers: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Raise `UserInputError` if ``command`` may not write into folder ``out`` (see the module docstring);
    return the marker found there (None for an absent or empty folder or a legacy one). Read-only."""
    out = _resolved(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"output {out} is a file; give a folder that is empty or absent")
    _overlap(out, inputs, roots)
    if not out.exists():
        return None
    marker = _read_marker(out)
    if marker is not None:
        if marker["command"] != command:
            raise UserInputError(
                f"output folder {out} holds the output of `medst {marker['command']}`; "
                f"give another folder for `medst {command}`"
            )
        return marker
    entries = _foreign_entries(out)
    if entries and not any((out / name).exists() for name in legacy_markers):
        raise UserInputError(
            f"output folder {out} is not empty and was not written by `medst {command}` "
            f"(it holds {entries[0]!r}); give an empty or new folder"
        )
    return None


def _write_marker(out: Path, data: dict[str, Any]) -> None:
    tmp = out / f"{MARKER}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out / MARKER)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class OutputDir:
    """A folder claimed by one command. ``previous``: the marker found at claim time (None: a fresh claim)."""

    path: Path
    command: str
    inputs: list[str]
    fingerprint: str | None
    previous: dict[str, Any] | None
    created: bool = False

    def _marker(self, entries: Sequence[str], complete: bool, fingerprint: str | None) -> dict[str, Any]:
        return {
            "command": self.command,
            "medst_version": __version__,
            "inputs": self.inputs,
            "fingerprint": fingerprint,
            "entries": sorted(entries),
            "complete": complete,
        }

    def _entries(self) -> list[str]:
        marker = _read_marker(self.path) or {}
        return [str(e) for e in marker.get("entries") or []]

    def finish(self, fingerprint: str | None = None) -> None:
        """Record in the marker that the command completed (its outputs are the folder's medst files)."""
        fp = self.fingerprint if fingerprint is None else fingerprint
        _write_marker(self.path, self._marker(self._entries(), True, fp))

    def release_if_unused(self) -> None:
        """Undo this claim when it created the folder and nothing but the marker was written (a command that
        failed before its first output leaves no folder behind)."""
        if self.created and [p.name for p in self.path.iterdir()] == [MARKER]:
            (self.path / MARKER).unlink()
            self.path.rmdir()

    def _remove_stale_staging(self) -> None:
        for p in self.path.glob(f"{_STAGING}*"):
            pid = p.name[len(_STAGING) :].split("-", 1)[0]
            if p.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)

    @contextmanager
    def replacing(self) -> Iterator[Path]:
        """Yield an empty staging folder inside the output folder; on success swap what was written there into
        place (see the module docstring), on failure remove it and keep the previous outputs."""
        self._remove_stale_staging()
        work = self.path / f"{_STAGING}{os.getpid()}-{os.urandom(4).hex()}"
        staged, aside = work / "new", work / "old"
        staged.mkdir(parents=True)
        aside.mkdir()
        try:
            yield staged
            self._swap(staged, aside)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _swap(self, staged: Path, aside: Path) -> None:
        new = sorted(p.name for p in staged.iterdir())
        old = [e for e in self._entries() if e not in new]
        # While entries move, the marker lists old and new ones: a crash here leaves a folder whose every medst
        # file is known, and the next run replaces them all.
        _write_marker(self.path, self._marker([*old, *new], False, self.fingerprint))
        for name in [*old, *new]:
            target = self.path / name
            if target.exists() or target.is_symlink():
                target.rename(aside / name)
        for name in new:
            (staged / name).rename(self.path / name)
        _write_marker(self.path, self._marker(new, True, self.fingerprint))


def claim_output_dir(
    out: Path,
    command: str,
    *,
    inputs: Sequence[Path | None] = (),
    roots: Sequence[Path | None] = (),
    fingerprint: str | None = None,
    legacy_markers: Sequence[str] = (),
) -> OutputDir:
    """Check that ``command`` may write into ``out`` (see the module docstring), create it and write the marker
    if none is there yet. Raises `UserInputError` with one line saying what to fix."""
    path = _resolved(out)
    previous = check_output_dir(path, command, inputs=inputs, roots=roots, legacy_markers=legacy_markers)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserInputError(f"cannot create output folder {out}: a file is in the way") from None
    claimed = OutputDir(
        path=path,
        command=command,
        inputs=[str(_resolved(Path(p))) for p in [*inputs, *roots] if p is not None],
        fingerprint=fingerprint,
        previous=previous,
        created=created,
    )
    if previous is None and not (path / MARKER).exists():
        _write_marker(path, claimed._marker([], False, fingerprint))
    return claimed


def check_output_file(out: Path, inputs: Sequence[Path | None] = ()) -> None:
    """Refuse (`UserInputError`) an output file path that is a folder or one of ``inputs``; read-only."""
    path = _resolved(out)
    if path.is_dir():
        raise UserInputError(f"output {out} is a folder; give a file name")
    for raw in inputs:
        if raw is not None and _resolved(Path(raw)).resolve() == path.resolve():
            raise UserInputError(f"output {out} is the input {raw}; give another file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserInputError(f"cannot write {out}: {path.parent} is a file")
