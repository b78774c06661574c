"""Cross-check with `medst synth`: every DICOM variant the generator writes (transfer syntaxes, MONOCHROME1/2,
VOI LUT, window, rescale) decodes through read_image, and every frontal comes out with the lungs dark."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom

from medst.archive.pixels import read_image


def test_every_synthetic_dicom_decodes_with_lungs_dark(synth_archive: Path) -> None:
    files = sorted(synth_archive.rglob("*.dcm"))
    assert files
    seen: Counter[tuple[str, str]] = Counter()
    frontals = 0
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        seen[(str(ds.file_meta.TransferSyntaxUID), str(ds.PhotometricInterpretation))] += 1
        for preset in ("mimic-jpg", "voi"):
            img = read_image(path, preset)  # type: ignore[arg-type]
            assert img.ndim == 2 and img.dtype == np.uint8, path.name
            assert img.shape == (ds.Rows, ds.Columns), path.name
            if ds.get("ViewPosition") in ("PA", "AP"):
                h, w = img.shape
                band = img[h // 3 : 2 * h // 3].astype(np.float64)
                lungs = np.concatenate(
                    [band[:, w // 8 : 3 * w // 8].ravel(), band[:, 5 * w // 8 : 7 * w // 8].ravel()]
                )
                centre = band[:, 7 * w // 16 : 9 * w // 16]
                assert lungs.mean() + 15 < centre.mean(), f"{path.name} {preset}: lungs not darker than spine"
                frontals += 1
    assert frontals > 0
    # The archive really exercises both polarities and several syntaxes.
    assert {"MONOCHROME1", "MONOCHROME2"} <= {photometric for _, photometric in seen}
    assert len({syntax for syntax, _ in seen}) >= 4
