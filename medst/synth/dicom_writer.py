"""Write one synthetic image as a DICOM file with the header and encoding variants real archives have.

Variants (chosen by the plan, see `trajectories`): modality CR or DX; 8-16 bits stored; MONOCHROME1 (stored values
inverted) or MONOCHROME2; display mapping by window centre/width, a VOI LUT sequence, a rescale slope/intercept
with a window, or nothing; and one of seven transfer syntaxes (explicit/implicit VR little endian, deflated, RLE
lossless, JPEG 2000 lossless, JPEG baseline 8-bit, JPEG-LS lossless). Every header carries obviously fake PHI with
the marker ``FAKEPHI`` so later stages can prove none of it leaks. The same inputs give the same bytes (UIDs are
derived from the seed and the ids).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

PHI_MARKER = "FAKEPHI"
_SOP_CLASS = {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1"}
_NATIVE = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}


def uid_for(seed: int, *parts: object) -> str:
    """A deterministic DICOM UID in the 2.25 (UUID) form: a name-based 128-bit hash of the seed and ids."""
    digest = hashlib.sha256("|".join(["medst-synth", str(seed), *map(str, parts)]).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _code(value: str, meaning: str, scheme: str = "SRT") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def stored_values(img: np.ndarray, bits: int, photometric: str) -> np.ndarray:
    """Quantise a [0, 1] MONOCHROME2-look image to `bits` bits; MONOCHROME1 stores the inverse."""
    maxv = (1 << bits) - 1
    v = np.rint(np.clip(img, 0.0, 1.0) * maxv).astype(np.uint16 if bits > 8 else np.uint8)
    if photometric == "MONOCHROME1":
        v = (maxv - v).astype(v.dtype)
    return v


def _add_display(ds: Dataset, intensity: str, bits: int) -> None:
    maxv = (1 << bits) - 1
    if intensity == "rescale":
        ds.RescaleIntercept = str(-(1 << (bits - 1)))
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.WindowCenter = str(round(maxv * 0.5 - (1 << (bits - 1))))
        ds.WindowWidth = str(round(maxv * 0.95))
    elif intensity == "window":
        ds.WindowCenter = str(round(maxv * 0.5))
        ds.WindowWidth = str(round(maxv * 0.95))
        ds.VOILUTFunction = "LINEAR"
    elif intensity == "voi_lut":
        n = maxv + 1
        x = np.arange(n, dtype=np.float64)
        lut = 1.0 / (1.0 + np.exp(-(x - n * 0.5) / (n * 0.18)))
        lut = np.rint((lut - lut.min()) / (lut.max() - lut.min()) * 4095).astype("<u2")
        item = Dataset()
        item.LUTDescriptor = [n if n < 65536 else 0, 0, 12]
        item.LUTExplanation = "SYNTH SIGMOID"
        item.add(DataElement(0x00283006, "OW", lut.tobytes()))
        ds.VOILUTSequence = [item]


def encode(img: np.ndarray, meta: Mapping[str, Any], seed: int) -> bytes:
    """A complete DICOM Part 10 file for one image.

    `img` is float32 (rows, cols) in [0, 1] with dense = bright; `meta` holds one row of the plan's image table
    joined with its study and patient (ids, StudyDate/StudyTime, view fields, transfer_syntax, photometric,
    intensity, modality, bits_stored, body_part, sex, age, procedure, patient_number, study_number).
    """
    ts = UID(str(meta["transfer_syntax"]))
    bits = int(meta["bits_stored"])
    photometric = str(meta["photometric"])
    modality = str(meta["modality"])
    dicom_id, study_id, subject_id = str(meta["dicom_id"]), str(meta["study_id"]), str(meta["subject_id"])
    sop_uid = uid_for(seed, "sop", dicom_id)

    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(_SOP_CLASS[modality])
    fm.MediaStorageSOPInstanceUID = UID(sop_uid)
    fm.TransferSyntaxUID = ts
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fm.ImplementationVersionName = "MEDST_SYNTH"
    ds = Dataset()
    ds.file_meta = fm
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = fm.MediaStorageSOPClassUID
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    date = str(int(meta["StudyDate"]))
    t = float(meta["StudyTime"])
    whole = int(t)
    time_str = f"{whole:06d}.{round((t - whole) * 1000):03d}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = time_str
    ds.AccessionNumber = f"{PHI_MARKER}ACC{int(meta['study_number'])}"
    ds.Modality = modality
    ds.Manufacturer = "MEDST SYNTHETIC"
    ds.InstitutionName = f"{PHI_MARKER} General Hospital"
    ds.ReferringPhysicianName = f"{PHI_MARKER}^DOCTOR"
    ds.StudyDescription = str(meta["procedure"])
    ds.SeriesDescription = str(meta["view_name"])
    ds.PerformedProcedureStepDescription = str(meta["procedure"])
    ds.ProcedureCodeSequence = [_code("CXR", str(meta["procedure"]), "L")]
    ds.PatientName = f"{PHI_MARKER}^PATIENT^{int(meta['patient_number'])}"
    ds.PatientID = subject_id
    birth_year = int(date[:4]) - int(meta["age"])
    ds.PatientBirthDate = f"{birth_year:04d}0101"
    ds.PatientSex = str(meta["sex"])
    if meta["body_part"]:
        ds.BodyPartExamined = str(meta["body_part"])
    ds.ViewPosition = str(meta["view_position"])
    ds.ViewCodeSequence = [_code(str(meta["view_code_value"]), str(meta["view_code_meaning"]))]
    if meta["patient_orientation"]:
        ds.PatientOrientationCodeSequence = [
            _code(
                "F-10440" if meta["patient_orientation"] == "Erect" else "F-10450",
                str(meta["patient_orientation"]),
            )
        ]
    ds.PatientOrientation = ["L", "F"] if meta["view"] != "lateral" else ["A", "F"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.StudyInstanceUID = uid_for(seed, "study", study_id)
    ds.SeriesInstanceUID = uid_for(seed, "series", dicom_id)
    ds.StudyID = study_id
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1

    arr = stored_values(img, bits, photometric)
    rows, cols = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    _add_display(ds, str(meta["intensity"]), bits)
    if ts in _NATIVE:
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    elif ts == JPEGBaseline8Bit:
        ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:  # pragma: no cover - cv2 always encodes a uint8 greyscale image
            raise RuntimeError("JPEG encoding failed")
        ds.PixelData = encapsulate([buf.tobytes()])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    elif ts in (RLELossless, JPEG2000Lossless, JPEGLSLossless):
        ds.PixelData = arr.tobytes()
        ds["PixelData"].VR = "OW" if bits > 8 else "OB"
        ds.compress(ts, arr, generate_instance_uid=False)
    else:  # pragma: no cover - the plan only uses the syntaxes above
        raise ValueError(f"unsupported transfer syntax {ts}")
    buf_out = io.BytesIO()
    dcmwrite(buf_out, ds, enforce_file_format=True)
    return buf_out.getvalue()
