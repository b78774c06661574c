"""How much `read_image` costs on top of the bare pydicom decode, per transfer syntax, on real chest films.

Floor: ``pydicom.dcmread(path).pixel_array`` (read + decode, nothing else), measured in the same run on the same
files. Printed per file: the floor in ms, `read_image` in ms for each preset, and the ratio floor / read_image
(1.0 = the intensity chain is free; the closer to 1 the better). Files: the RG1 chest CR from the pydicom-data
wheel in four syntaxes, plus ../shared/realdata/dicom/chest when present.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_decode.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file

from medst.archive.intensity import Preset
from medst.archive.pixels import read_image

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "dicom" / "chest"


def _files() -> list[Path]:
    files = [get_testdata_file(n) for n in ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm")]
    found = [Path(str(f)) for f in files if f is not None]
    if REALDATA.is_dir():
        found += sorted(REALDATA.glob("*.dcm"))
    return found


def _decode_only(path: Path) -> object:
    return pydicom.dcmread(path).pixel_array


def _best_ms(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the best is kept")
    args = parser.parse_args()
    files = _files()
    if not files:
        raise SystemExit("no test files: install pydicom-data or provide ../shared/realdata")
    print(
        f"{'file':<22} {'syntax':<34} {'floor ms':>9} {'mimic ms':>9} {'voi ms':>8} {'ratio mimic':>12} {'ratio voi':>10}"
    )
    ratios: dict[Preset, list[float]] = {"mimic-jpg": [], "voi": []}
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        floor = _best_ms(partial(_decode_only, path), args.repeat)
        ms = {preset: _best_ms(partial(read_image, path, preset), args.repeat) for preset in ratios}
        for preset in ratios:
            ratios[preset].append(floor / ms[preset])
        print(
            f"{path.name:<22} {ds.file_meta.TransferSyntaxUID.name[:34]:<34} {floor:9.1f} {ms['mimic-jpg']:9.1f} "
            f"{ms['voi']:8.1f} {floor / ms['mimic-jpg']:12.2f} {floor / ms['voi']:10.2f}"
        )
    for preset, values in ratios.items():
        print(f"median ratio floor/read_image ({preset}) = {statistics.median(values):.2f}")


if __name__ == "__main__":
    main()
