"""The plan of a synthetic archive: patients, their disease trajectories, studies and images (no pixels).

Everything here is vectorised over patients (numpy + polars), so a MIMIC-scale plan (65k patients, ~228k studies,
~377k images) takes seconds. The plan depends only on (patients, seed, image_size).

Severities are floats in [0, 1] (0 = absent, >0 means at least 0.2, below 0.3 the report hedges and the CheXpert
label is -1.0). The change of a finding against the patient's previous study is one of `CHANGES`:
``absent`` (absent now and before), ``baseline`` (present on the first study), ``new``, ``increased``,
``decreased``, ``unchanged``, ``resolved``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

DRAWN = ("pleural_effusion", "consolidation", "edema", "pneumothorax", "cardiomegaly")
"""Findings drawn in the images."""
TRUTH_FINDINGS = ("pleural_effusion", "consolidation", "pneumonia", "edema", "pneumothorax", "cardiomegaly")
"""Findings with a severity in the truth table (pneumonia = consolidation in an infected patient)."""
CHANGES = ("absent", "baseline", "new", "increased", "decreased", "unchanged", "resolved")
UNCERTAIN_BELOW = 0.3
MAX_STUDIES = 12

# name -> (normalised view, projection drawn, ViewPosition, ViewCodeSequence CodeValue, CodeMeaning)
VIEWS: dict[str, tuple[str, str, str, str, str]] = {
    "PA": ("frontal", "frontal", "PA", "R-10214", "postero-anterior"),
    "AP": ("frontal", "frontal", "AP", "R-10206", "antero-posterior"),
    "LATERAL": ("lateral", "lateral", "LATERAL", "R-10232", "lateral"),
    "LL": ("lateral", "lateral", "LL", "R-10236", "left lateral"),
    "LAO": ("other", "frontal", "LAO", "R-10246", "left anterior oblique"),
    "RAO": ("other", "frontal", "RAO", "R-10242", "right anterior oblique"),
    "SWIMMERS": ("other", "lateral", "SWIMMERS", "R-10224", "swimmer's"),
    "AP AXIAL": ("other", "frontal", "AP AXIAL", "R-102CD", "antero-posterior axial"),
}

# study pattern -> (views, weight, procedure code meaning). The first len(PATTERNS) studies take them in order.
PATTERNS: list[tuple[tuple[str, ...], float, str]] = [
    (("PA", "LATERAL"), 0.40, "CHEST (PA AND LAT)"),
    (("AP",), 0.29, "CHEST (PORTABLE AP)"),
    (("PA", "LL"), 0.08, "CHEST (PA AND LAT)"),
    (("LATERAL",), 0.015, "CHEST (PA AND LAT)"),
    (("AP", "AP"), 0.035, "CHEST (PORTABLE AP)"),
    (("PA",), 0.04, "CHEST (SINGLE VIEW)"),
    (("AP", "LATERAL"), 0.06, "CHEST (PA AND LAT)"),
    (("PA", "PA", "LATERAL"), 0.02, "CHEST (PRE-OP PA & LAT)"),
    (("PA", "LATERAL", "LAO"), 0.005, "CHEST (PA, LAT & OBLIQUES)"),
    (("PA", "LATERAL", "RAO"), 0.005, "CHEST (PA, LAT & OBLIQUES)"),
    (("AP", "SWIMMERS"), 0.005, "CHEST (PORTABLE AP)"),
    (("AP AXIAL", "LATERAL"), 0.005, "CHEST (APICAL LORDOTIC)"),
]

TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline 8-bit
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
)
TS_WEIGHTS = (0.35, 0.2, 0.05, 0.1, 0.1, 0.1, 0.1)
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")
INTENSITY = ("window", "voi_lut", "none", "rescale")
"""How the header maps stored values to display: window centre/width, a VOI LUT sequence, nothing, or a
modality rescale (slope/intercept) with a window in rescaled units."""
MODALITIES = ("CR", "DX")
BITS = (10, 12, 12, 14, 15, 16)
REPORT_VARIANTS = (
    "standard",
    "impression_only",
    "findings_only",
    "last_paragraph",
    "misspelled",
    "numbered",
    "addendum",
    "empty",
)
REPORT_WEIGHTS = (0.68, 0.10, 0.08, 0.04, 0.04, 0.035, 0.02, 0.005)
EFFUSION_SIDES = ("right", "left", "bilateral")
LOBES = (
    "right upper lobe",
    "right middle lobe",
    "right lower lobe",
    "left upper lobe",
    "lingula",
    "left lower lobe",
)
PTX_SIDES = ("right", "left")

# per drawn finding: prevalence at the first study, chance of a new episode per later study, and the chance that a
# present finding resolves / worsens / improves (else it stays, with a little jitter). Frequent enough that most
# timelines change (the demo learns from those changes), with steps of 0.2-0.4 so a change shows in the pixels.
_DYNAMICS = {
    "pleural_effusion": (0.35, 0.18, 0.15, 0.30, 0.30),
    "consolidation": (0.30, 0.15, 0.20, 0.30, 0.30),
    "edema": (0.25, 0.12, 0.20, 0.30, 0.30),
    "pneumothorax": (0.12, 0.06, 0.30, 0.25, 0.30),
    "cardiomegaly": (0.25, 0.02, 0.00, 0.10, 0.05),
}


@dataclass(frozen=True)
class Plan:
    """The whole archive without pixels: one row per patient, per study and per image."""

    patients: pl.DataFrame
    studies: pl.DataFrame
    images: pl.DataFrame


def _unique_ids(rng: np.random.Generator, n: int, base: int) -> np.ndarray:
    """`n` distinct random 8-digit ids in [base, base + 10^7), in random order."""
    draws = rng.integers(0, 10_000_000, size=int(n * 1.2) + 64)
    _, first = np.unique(draws, return_index=True)
    keep = draws[np.sort(first)][:n]
    if keep.size < n:  # astronomically unlikely; fall back to a permutation
        keep = rng.permutation(10_000_000)[:n]
    return keep.astype(np.int64) + base


def _trajectories(rng: np.random.Generator, n_pat: int) -> dict[str, np.ndarray]:
    """Severity matrices (patients, MAX_STUDIES) per drawn finding, evolving study to study."""
    out: dict[str, np.ndarray] = {}
    for name in DRAWN:
        prev0, p_new, p_res, p_worse, p_better = _DYNAMICS[name]
        sev = np.zeros((n_pat, MAX_STUDIES), np.float64)
        s = np.where(rng.random(n_pat) < prev0, rng.uniform(0.2, 0.9, n_pat), 0.0)
        sev[:, 0] = s
        for k in range(1, MAX_STUDIES):
            u = rng.random(n_pat)
            step = rng.uniform(0.2, 0.4, n_pat)
            present = s > 0
            onset = np.where(rng.random(n_pat) < p_new, rng.uniform(0.3, 0.9, n_pat), 0.0)
            nxt = np.where(u < p_res, 0.0,
                  np.where(u < p_res + p_worse, np.minimum(s + step, 1.0),
                  np.where(u < p_res + p_worse + p_better, s - step,
                           np.clip(s + rng.uniform(-0.04, 0.04, n_pat), 0.2, 1.0))))  # fmt: skip
            nxt = np.where(nxt < 0.2, 0.0, nxt)
            s = np.where(present, nxt, onset)
            sev[:, k] = s
        out[name] = np.round(sev, 2)
    return out


def change_of(prev: np.ndarray, cur: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Change label (strings from CHANGES) of severities `cur` against `prev`; `first` marks first studies."""
    diff = cur - prev
    return np.select(
        [
            first & (cur > 0),
            first | ((prev == 0) & (cur == 0)),
            prev == 0,
            cur == 0,
            np.abs(diff) < 0.1,
            diff > 0,
        ],
        ["baseline", "absent", "new", "resolved", "unchanged", "increased"],
        default="decreased",
    )


def _datetimes(rng: np.random.Generator, n_pat: int, n_st: np.ndarray, pat_of: np.ndarray) -> np.ndarray:
    """Study datetimes (datetime64[ms]) in increasing order per patient, years 21xx, days to months apart."""
    start_day = rng.integers(0, 85 * 365, n_pat)
    start_ms = rng.integers(7 * 3_600_000, 20 * 3_600_000, n_pat)
    n = int(n_st.sum())
    inpatient = rng.random(n) < 0.45
    gap_days = np.where(inpatient, rng.uniform(0.3, 6.0, n), rng.uniform(12.0, 300.0, n))
    gap_ms = (gap_days * 86_400_000).astype(np.int64)
    offsets = np.cumsum(gap_ms)
    first_idx = np.concatenate([[0], np.cumsum(n_st)[:-1]])
    offsets = offsets - np.repeat(offsets[first_idx], n_st)  # first study of each patient at offset 0
    base = np.datetime64("2105-01-01T00:00:00.000", "ms")
    ms = start_day[pat_of] * 86_400_000 + start_ms[pat_of] + offsets
    return base + ms.astype("timedelta64[ms]")


def study_date_time(dt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """StudyDate as int YYYYMMDD and StudyTime as float HHMMSS.fff (the MIMIC metadata CSV form)."""
    days = dt.astype("datetime64[D]")
    years = days.astype("datetime64[Y]").astype(np.int64) + 1970
    months = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dom = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    ms = (dt - days).astype(np.int64)
    hh, mm, ss, fff = ms // 3_600_000, ms // 60_000 % 60, ms // 1000 % 60, ms % 1000
    date = years * 10000 + months * 100 + dom
    time = (hh * 10000 + mm * 100 + ss).astype(np.float64) + fff / 1000.0
    return date.astype(np.int64), np.round(time, 3)


def _forced_choice(
    rng: np.random.Generator, n: int, k: int, weights: tuple[float, ...], offset: int = 0
) -> np.ndarray:
    """Indices in [0, k): the first k items cycle through every value (so small archives hold them all), the rest
    are drawn with `weights`."""
    w = np.asarray(weights, np.float64)
    out = rng.choice(k, size=n, p=w / w.sum())
    head = min(n, k)
    out[:head] = (np.arange(head) + offset) % k
    return out


def build_plan(patients: int, seed: int, image_size: int) -> Plan:
    """Plan an archive of `patients` patients: ids, splits, trajectories, studies and images."""
    rng = np.random.default_rng([seed, 20_260_000])
    n_pat = patients
    subject = np.sort(_unique_ids(rng, n_pat, 10_000_000))
    n_st = np.clip(rng.geometric(0.28, n_pat), 1, MAX_STUDIES)
    n_st[: min(n_pat, 3)] = np.minimum([6, 4, 5][: min(n_pat, 3)], MAX_STUDIES)  # a long first timeline
    order = rng.permutation(n_pat)
    n_test = max(1, round(0.10 * n_pat)) if n_pat >= 3 else 0
    n_val = max(1, round(0.05 * n_pat)) if n_pat >= 3 else 0
    split = np.full(n_pat, "train", dtype=object)
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "validate"
    sev = _trajectories(rng, n_pat)
    pneu_flag = rng.random(n_pat) < 0.6
    patients_df = pl.DataFrame(
        {
            "subject_id": subject,
            "split": split.astype(str),
            "n_studies": n_st,
            "sex": np.where(rng.random(n_pat) < 0.5, "F", "M"),
            "age": rng.integers(25, 92, n_pat),
            "effusion_side": np.array(EFFUSION_SIDES)[rng.choice(3, n_pat, p=[0.4, 0.3, 0.3])],
            "consolidation_lobe": np.array(LOBES)[rng.integers(0, len(LOBES), n_pat)],
            "pneumothorax_side": np.array(PTX_SIDES)[rng.integers(0, 2, n_pat)],
            "pneumonia_flag": pneu_flag,
            "anatomy_seed": rng.integers(0, 2**31, n_pat),
        }
    )

    n_total = int(n_st.sum())
    pat_of = np.repeat(np.arange(n_pat), n_st)
    k_of = np.arange(n_total) - np.repeat(np.concatenate([[0], np.cumsum(n_st)[:-1]]), n_st)
    dts = _datetimes(rng, n_pat, n_st, pat_of)
    sdate, stime = study_date_time(dts)
    first = k_of == 0
    study_cols: dict[str, object] = {
        "subject_id": subject[pat_of],
        "study_id": _unique_ids(rng, n_total, 50_000_000),
        "study_index": k_of,
        "study_datetime": dts,
        "StudyDate": sdate,
        "StudyTime": stime,
        "split": split[pat_of].astype(str),
    }
    for name in DRAWN:
        cur = sev[name][pat_of, k_of]
        prev = sev[name][pat_of, np.maximum(k_of - 1, 0)]
        study_cols[f"sev_{name}"] = cur
        study_cols[f"chg_{name}"] = change_of(prev, cur, first)
    pneu_cur = np.where(pneu_flag[pat_of], study_cols["sev_consolidation"], 0.0)  # type: ignore[call-overload]
    pneu_prev = np.where(pneu_flag[pat_of], sev["consolidation"][pat_of, np.maximum(k_of - 1, 0)], 0.0)
    study_cols["sev_pneumonia"] = pneu_cur
    study_cols["chg_pneumonia"] = change_of(pneu_prev, pneu_cur, first)
    pattern = _forced_choice(rng, n_total, len(PATTERNS), tuple(p[1] for p in PATTERNS))
    study_cols["pattern"] = pattern
    study_cols["procedure"] = np.array([p[2] for p in PATTERNS])[pattern]
    study_cols["report_variant"] = np.array(REPORT_VARIANTS)[
        _forced_choice(rng, n_total, len(REPORT_VARIANTS), REPORT_WEIGHTS)
    ]
    study_cols["report_seed"] = rng.integers(0, 2**31, n_total)
    studies = pl.DataFrame(study_cols)

    n_img_of = np.array([len(p[0]) for p in PATTERNS])[pattern]
    study_of = np.repeat(np.arange(n_total), n_img_of)
    slot = np.arange(study_of.size) - np.repeat(np.concatenate([[0], np.cumsum(n_img_of)[:-1]]), n_img_of)
    view_table = np.array([[*p[0], "", "", ""][:3] for p in PATTERNS])
    view_name = view_table[pattern[study_of], slot]
    images = _image_columns(rng, view_name, image_size)
    words = rng.integers(0, 2**32, size=(study_of.size, 5), dtype=np.uint64)
    dicom_id = ["-".join(f"{w:08x}" for w in row) for row in words.tolist()]
    images = images.with_columns(
        pl.Series("dicom_id", dicom_id),
        pl.Series("subject_id", study_cols["subject_id"][study_of]),  # type: ignore[index]
        pl.Series("study_id", studies["study_id"].to_numpy()[study_of]),
        pl.Series("image_seed", rng.integers(0, 2**31, study_of.size)),
        pl.Series("anatomy_seed", patients_df["anatomy_seed"].to_numpy()[pat_of[study_of]]),
    )
    return Plan(patients_df, studies, images)


def _image_columns(rng: np.random.Generator, view_name: np.ndarray, image_size: int) -> pl.DataFrame:
    n = view_name.size
    vinfo = {
        k: np.array([VIEWS[v][i] for v in VIEWS])
        for i, k in enumerate(("view", "projection", "vp", "code_value", "code_meaning"))
    }
    vidx = np.searchsorted(np.array(list(VIEWS)), view_name, sorter=np.argsort(np.array(list(VIEWS))))
    vidx = np.argsort(np.array(list(VIEWS)))[vidx]
    vp = vinfo["vp"][vidx].astype(object)
    empty = rng.random(n) < 0.04
    for name in ("PA", "AP", "LATERAL", "LL"):  # force one empty ViewPosition per common view (the 2nd seen)
        idx = np.flatnonzero(view_name == name)
        if idx.size >= 2:
            empty[idx[0]] = False
            empty[idx[1]] = True
    vp[empty] = ""
    ts = _forced_choice(rng, n, len(TRANSFER_SYNTAXES), TS_WEIGHTS)
    ts_uid = np.array(TRANSFER_SYNTAXES)[ts]
    photometric = np.array(PHOTOMETRICS)[_forced_choice(rng, n, 2, (0.6, 0.4))]
    intensity = np.array(INTENSITY)[_forced_choice(rng, n, len(INTENSITY), (0.4, 0.2, 0.25, 0.15), offset=1)]
    modality = np.array(MODALITIES)[_forced_choice(rng, n, 2, (0.5, 0.5))]
    bits = np.array(BITS)[_forced_choice(rng, n, len(BITS), (1, 1, 1, 1, 1, 1))]
    bits = np.where(ts_uid == JPEG_BASELINE, 8, bits)
    # VOI LUT tables stay small (<= 4096 entries): only for <= 12-bit data
    intensity = np.where((intensity == "voi_lut") & (bits > 12), "window", intensity)
    shape = rng.choice(3, size=n, p=[0.6, 0.25, 0.15])
    short = (round(image_size * 0.82) // 2) * 2
    rows = np.where(shape == 2, short, image_size)
    cols = np.where(shape == 0, short, image_size)
    orient = np.where(
        vinfo["view"][vidx] == "lateral",
        "Erect",
        np.where(vp == "AP", np.where(rng.random(n) < 0.7, "Recumbent", "Erect"), "Erect"),
    )
    orient = np.where(rng.random(n) < 0.05, "", orient)
    return pl.DataFrame(
        {
            "view_name": view_name.astype(str),
            "view": vinfo["view"][vidx],
            "projection": vinfo["projection"][vidx],
            "view_position": vp.astype(str),
            "view_code_value": vinfo["code_value"][vidx],
            "view_code_meaning": vinfo["code_meaning"][vidx],
            "patient_orientation": orient,
            "transfer_syntax": ts_uid,
            "photometric": photometric,
            "intensity": intensity,
            "modality": modality,
            "bits_stored": bits.astype(np.int64),
            "rows": rows.astype(np.int64),
            "columns": cols.astype(np.int64),
            "body_part": np.where(rng.random(n) < 0.96, "CHEST", ""),
        }
    )
