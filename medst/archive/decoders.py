"""Which DICOM transfer syntaxes this installation can decode, and with which pydicom plugin.

pydicom registers one decoder per transfer syntax; each decoder holds plugins (pylibjpeg, pyjpegls, pillow, gdcm)
and knows which of them have their dependencies installed. This module asks pydicom, it never guesses, so
`medst doctor` reports exactly what `read_image` will be able to do.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom import uid as _uid
from pydicom.pixels import get_decoder

# (uid, required): the syntaxes MIMIC-CXR and common CR/DX scanners write. Required ones must decode or the
# archive cannot be processed; big endian is retired (PS3.5 since 2004) and HTJ2K is newer than MIMIC.
_SYNTAXES: tuple[tuple[str, bool], ...] = (
    (_uid.ImplicitVRLittleEndian, True),
    (_uid.ExplicitVRLittleEndian, True),
    (_uid.DeflatedExplicitVRLittleEndian, True),
    (_uid.ExplicitVRBigEndian, False),
    (_uid.RLELossless, True),
    (_uid.JPEGBaseline8Bit, True),
    (_uid.JPEGExtended12Bit, True),
    (_uid.JPEGLossless, True),
    (_uid.JPEGLosslessSV1, True),
    (_uid.JPEGLSLossless, True),
    (_uid.JPEGLSNearLossless, True),
    (_uid.JPEG2000Lossless, True),
    (_uid.JPEG2000, True),
    (_uid.HTJ2KLossless, False),
    (_uid.HTJ2KLosslessRPCL, False),
    (_uid.HTJ2K, False),
)

NATIVE_PLUGIN = "pydicom (native)"


@dataclass(frozen=True)
class DecoderInfo:
    """One row of the decoder table.

    Attributes:
        name: the transfer syntax name as pydicom spells it.
        uid: the transfer syntax UID.
        available: True when at least one plugin can decode it here.
        plugins: the available plugins, in pydicom's order of preference (``pydicom (native)`` for
            uncompressed and deflated syntaxes, which need no plugin).
        required: True when medst refuses to run (``medst doctor`` fails) without it.
        missing: plugins pydicom knows for this syntax whose dependencies are not installed, with the reason.
    """

    name: str
    uid: str
    available: bool
    plugins: tuple[str, ...]
    required: bool
    missing: tuple[str, ...]


def decoder_info(transfer_syntax: str, required: bool = False) -> DecoderInfo:
    """Describe the decoder pydicom has for one transfer syntax UID (``available=False`` if it has none)."""
    ts = _uid.UID(transfer_syntax)
    name = ts.name if ts.is_transfer_syntax else str(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return DecoderInfo(name, str(ts), False, (), required, ("no pydicom decoder for this syntax",))
    if not ts.is_compressed:
        # Native syntaxes (and deflated, which pydicom inflates while reading the file) need no plugin.
        return DecoderInfo(name, str(ts), True, (NATIVE_PLUGIN,), required, ())
    missing = tuple(decoder.missing_dependencies)
    return DecoderInfo(
        name, str(ts), bool(decoder.is_available), tuple(decoder.available_plugins), required, missing
    )


def decoder_table() -> list[DecoderInfo]:
    """One `DecoderInfo` per transfer syntax that MIMIC-CXR and common chest X-ray scanners use.

    Order: uncompressed, deflated, big endian, RLE, JPEG baseline / extended / lossless (both), JPEG-LS lossless /
    near-lossless, JPEG 2000 lossless / lossy, then HTJ2K (optional).
    """
    return [decoder_info(ts, required) for ts, required in _SYNTAXES]


def missing_required(table: list[DecoderInfo] | None = None) -> list[DecoderInfo]:
    """The required transfer syntaxes that no installed plugin can decode (empty when all is well)."""
    rows = decoder_table() if table is None else table
    return [row for row in rows if row.required and not row.available]
