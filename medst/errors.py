"""Exceptions shared by every stage.

`UserInputError` is for mistakes the user must fix (a wrong path, a missing column): the CLI prints it as one
line. `ImageDecodeError` is for one bad item inside good input (a corrupt DICOM): the stage catches it and turns it
into a reject record carrying `reason`, so a build never crashes on a bad file.
"""

from __future__ import annotations


class MedstError(Exception):
    """Base class of every error medst raises on purpose."""


class UserInputError(MedstError):
    """Bad user input (missing folder, missing column, bad option): the message says what to fix."""


class ImageDecodeError(MedstError):
    """An image that cannot be turned into pixels.

    Attributes:
        reason: a short machine-readable code (``not_dicom``, ``no_pixel_data``, ``decode_error``,
            ``unsupported_transfer_syntax``, ``truncated_pixel_data``, ``multi_frame``,
            ``unsupported_photometric``, ``too_large``, ``unreadable_image``, ``pixel_length_mismatch``,
            ``inconsistent_bits``, ``blank_image``), stable across versions so it can go into reject records and
            be counted.
        message: a human sentence saying what was wrong with the file.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[ImageDecodeError], tuple[str, str]]:
        # Keep the two-argument constructor working when the error crosses a process boundary
        # (multiprocessing pickles exceptions raised in workers).
        return (type(self), (self.reason, self.message))


class WorkerDiedError(MedstError):
    """A worker process died from outside (out-of-memory killer, ``kill -9``) while running a job, more often
    than the job is retried: the message names the job."""
