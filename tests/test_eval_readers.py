"""Benchmark readers on the published file layouts: MS-CXR-T (bare id and path-stem dicom_id, JPG and DICOM
releases), RSNA stage-2 labels + split manifest, COVIDx txt files; missing input -> one clear error line."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from medst.errors import UserInputError
from medst.eval import readers as R
from medst.eval.splits import default_manifest_path, load_manifest, patients_sha256, rsna_test_split

FINDINGS = R.MSCXRT_FINDINGS
IMAGE_HEADER = ["dicom_id", "previous_dicom_id", "study_id", "subject_id", "previous_study_id"]
IMAGE_HEADER += [f"{f}_progression" for f in FINDINGS] + [f"{f}_label_quality" for f in FINDINGS]


def _jpg(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8), 128, np.uint8))
    return path


def _mimic_tree(root: Path, suffix: str = ".jpg") -> None:
    """Two studies of one patient in the MIMIC release layout (JPG or DICOM file names)."""
    for study, dicom in (("50000001", "aaaa-1111"), ("50000002", "bbbb-2222")):
        target = root / "files" / "p10" / "p10000032" / f"s{study}" / f"{dicom}{suffix}"
        if suffix == ".jpg":
            _jpg(target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"\0" * 132)  # the reader only locates files; pixels are the encoder's job


def _image_csv(path: Path, dicom: str, previous: str, labels: dict[str, str]) -> Path:
    row = {h: "" for h in IMAGE_HEADER}
    row.update(
        dicom_id=dicom,
        previous_dicom_id=previous,
        study_id="50000002",
        subject_id="10000032",
        previous_study_id="50000001",
    )
    for f, v in labels.items():
        row[f"{f}_progression"] = v
        row[f"{f}_label_quality"] = "gold"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, IMAGE_HEADER)
        w.writeheader()
        w.writerow(row)
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".dcm"])
def test_mscxrt_image_bare_ids_in_jpg_and_dicom_release(tmp_path: Path, suffix: str) -> None:
    _mimic_tree(tmp_path / "mimic", suffix)
    csv_path = _image_csv(
        tmp_path / "img.csv", "bbbb-2222", "aaaa-1111", {"edema": "worsening", "pneumonia": "improving"}
    )
    (pair,) = R.read_mscxrt_image(csv_path, tmp_path / "mimic")
    assert pair.current.name == f"bbbb-2222{suffix}" and pair.current.parent.name == "s50000002"
    assert pair.previous.name == f"aaaa-1111{suffix}" and pair.previous.parent.name == "s50000001"
    # blank findings are absent, not a class
    assert pair.labels == {"edema": 2, "pneumonia": 0}


def test_mscxrt_image_dicom_id_as_path_stem(tmp_path: Path) -> None:
    _mimic_tree(tmp_path / "mimic")
    csv_path = _image_csv(
        tmp_path / "img.csv",
        "p10/p10000032/s50000002/bbbb-2222",
        "p10/p10000032/s50000001/aaaa-1111",
        {"consolidation": "stable"},
    )
    (pair,) = R.read_mscxrt_image(csv_path, tmp_path / "mimic")
    assert pair.current == tmp_path / "mimic/files/p10/p10000032/s50000002/bbbb-2222.jpg"
    assert pair.labels == {"consolidation": 1}


def test_mscxrt_image_found_by_scan_when_layout_differs(tmp_path: Path) -> None:
    _jpg(tmp_path / "flat" / "bbbb-2222.jpg")
    _jpg(tmp_path / "flat" / "sub" / "aaaa-1111.jpg")
    csv_path = _image_csv(tmp_path / "img.csv", "bbbb-2222", "aaaa-1111", {"edema": "stable"})
    (pair,) = R.read_mscxrt_image(csv_path, tmp_path / "flat")
    assert pair.previous == tmp_path / "flat" / "sub" / "aaaa-1111.jpg"


def test_mscxrt_missing_image_and_column_are_one_line_errors(tmp_path: Path) -> None:
    _mimic_tree(tmp_path / "mimic")
    csv_path = _image_csv(tmp_path / "img.csv", "bbbb-2222", "zzzz-9999", {"edema": "stable"})
    with pytest.raises(UserInputError) as err:
        R.read_mscxrt_image(csv_path, tmp_path / "mimic")
    assert "zzzz-9999" in str(err.value) and "--mimic-root" in str(err.value) and "\n" not in str(err.value)
    bad = tmp_path / "bad.csv"
    bad.write_text("dicom_id,study_id\nx,1\n")
    with pytest.raises(UserInputError, match="lacks column") as err:
        R.read_mscxrt_image(bad, tmp_path / "mimic")
    assert "\n" not in str(err.value)
    with pytest.raises(UserInputError, match="file not found"):
        R.read_mscxrt_image(tmp_path / "nope.csv", tmp_path / "mimic")


def test_mscxrt_sentences_subset_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "MS_CXR_T_temporal_sentence_similarity_v1.0.0.csv"
    path.write_text(
        "subset_name,sentence_1,sentence_2,category\n"
        'RadGraph,"Pleural effusion has improved.","Pleural effusion is smaller.",paraphrase\n'
        "RadGraph,Edema has worsened.,Edema has improved.,contradiction\n"
        "CheXpert,No change.,Unchanged.,paraphrase\n"
    )
    pairs = R.read_mscxrt_sentences(path)
    assert pairs.labels == [1, 0]
    assert pairs.sentence_1[0] == "Pleural effusion has improved."
    assert len(R.read_mscxrt_sentences(path, subset=None).labels) == 3
    with pytest.raises(UserInputError, match="subset_name"):
        R.read_mscxrt_sentences(path, subset="Other")


def _rsna(tmp_path: Path, n: int) -> Path:
    folder = tmp_path / "rsna"
    (folder / R.RSNA_IMAGES).mkdir(parents=True)
    lines = ["patientId,x,y,width,height,Target"]
    for i in range(n):
        pid = f"{i:04d}-pid"
        if i % 3 == 0:  # two boxes for one positive patient, as in the real file
            lines += [f"{pid},10,10,50,50,1", f"{pid},100,100,40,40,1"]
        else:
            lines.append(f"{pid},,,,,0")
        (folder / R.RSNA_IMAGES / f"{pid}.dcm").write_bytes(b"\0")
    (folder / R.RSNA_LABELS).write_text("\n".join(lines) + "\n")
    return folder


def test_rsna_labels_one_per_patient_and_reproducible_split(tmp_path: Path) -> None:
    folder = _rsna(tmp_path, 40)
    patients = R.read_rsna(folder)
    assert len(patients.patient_ids) == 40 and patients.patient_ids == sorted(patients.patient_ids)
    assert sum(patients.labels) == 14  # i % 3 == 0 for i < 40
    manifest = load_manifest(default_manifest_path())
    split = rsna_test_split(patients.patient_ids, manifest)
    # 40 patients: 12 held out (30%), of which the first half (6) is the test set, as the authors' code
    assert len(split.test_patients) == 6
    assert split == rsna_test_split(
        list(reversed(patients.patient_ids)), manifest
    )  # order of input irrelevant
    assert split.checksum == patients_sha256(split.test_patients)
    assert not split.matches_real_release and "not the real stage-2" in split.note

    # the authors' exact procedure: train_test_split on the grouped (sorted) table, random_state 0
    from sklearn.model_selection import train_test_split

    _train, rest = train_test_split(patients.patient_ids, test_size=0.3, random_state=0)
    test, _val = train_test_split(rest, test_size=0.5, random_state=0)
    assert split.test_patients == sorted(test)


def test_rsna_manifest_checksum_guards_the_real_release(tmp_path: Path) -> None:
    ids = [f"p{i}" for i in range(20)]
    manifest = {"seed": 0, "expected": {"n_patients": 20, "test_patients_sha256": "0" * 64}}
    with pytest.raises(UserInputError, match="checksum"):
        rsna_test_split(ids, manifest)
    good = rsna_test_split(ids, {"seed": 0, "expected": {"n_patients": 20}})
    manifest["expected"]["test_patients_sha256"] = good.checksum  # type: ignore[index]
    assert rsna_test_split(ids, manifest).matches_real_release
    explicit = rsna_test_split(ids, {"seed": 0, "test_patients": ["p3", "p1", "absent"]})
    assert explicit.test_patients == ["p1", "p3"]


def test_rsna_missing_folder_is_one_line(tmp_path: Path) -> None:
    folder = _rsna(tmp_path, 5)
    shutil.rmtree(folder / R.RSNA_IMAGES)
    with pytest.raises(UserInputError, match="image folder not found") as err:
        R.read_rsna(folder)
    assert "\n" not in str(err.value)


def test_covidx_txt_layout(tmp_path: Path) -> None:
    folder = tmp_path / "covidx"
    rows = [
        ("p1", "a.png", "normal", "rsna"),
        ("p2", "b c.jpg", "pneumonia", "sirm"),
        ("p3", "d.jpg", "COVID-19", "cohen"),
    ]
    for split in ("train", "test"):
        (folder / split).mkdir(parents=True)
        for _pid, name, _cls, _src in rows:
            _jpg(folder / split / name)
        (folder / f"{split}.txt").write_text("\n".join(" ".join(r) for r in rows) + "\n")
    data = R.read_covidx(folder, "train")
    assert data.labels == [0, 1, 2]
    assert data.paths[1] == folder / "train" / "b c.jpg"  # a file name with a space survives
    assert data.patient_ids == ["p1", "p2", "p3"]
    (folder / "test" / "d.jpg").unlink()
    with pytest.raises(UserInputError, match="missing") as err:
        R.read_covidx(folder, "test")
    assert "\n" not in str(err.value)
    (folder / "train.txt").write_text("p9 e.png positive sirm\n")
    with pytest.raises(UserInputError, match="3-class"):
        R.read_covidx(folder, "train")


def test_find_dir_with_searches_benchmarks_subfolder(tmp_path: Path) -> None:
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "MS_CXR_T_temporal_image_classification_v1.0.0.csv").write_text("x\n")
    found = R.find_dir_with(
        None, tmp_path, [R.MSCXRT_IMAGE_GLOB], ("benchmarks",), "MS-CXR-T", "--mscxrt-dir"
    )
    assert found == bench
    with pytest.raises(UserInputError, match="--covidx-dir") as err:
        R.find_dir_with(None, tmp_path, ["train.txt"], ("covidx",), "COVIDx", "--covidx-dir")
    assert "\n" not in str(err.value)
