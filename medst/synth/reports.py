"""MIMIC-CXR style free-text reports that describe what the images show, and the CheXpert labels they imply.

A report states every present finding with its severity, location and change against the prior study (new,
increased, decreased, unchanged, resolved) in varied phrasings, hedges findings of severity below 0.3 ("possible",
"cannot be excluded": CheXpert -1.0), and mentions some absent findings as negatives (CheXpert 0.0). Layout
follows the MIMIC text format: a centred ``FINAL REPORT`` line, section headers with a leading space, lines wrapped
at 79 characters, ``___`` for de-identified text. Variants (`trajectories.REPORT_VARIANTS`): ``standard``
(findings + impression), ``impression_only``, ``findings_only``, ``last_paragraph`` (no findings/impression
header: the text sits in a last paragraph), ``misspelled`` (``IMPRESSIONS:``, ``FINDINGS/IMPRESSION:``,
``FINDNGS:``), ``numbered`` (``1. ... 2. ...`` impression), ``addendum`` (an addendum after a line of
underscores), ``empty`` (a zero-byte file; such studies have no row in the CheXpert CSV, as in MIMIC).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from medst.schemas import FINDINGS
from medst.synth.trajectories import UNCERTAIN_BELOW

HEADER = " " * 33 + "FINAL REPORT"
UNDERSCORES = " " + "_" * 78

_SEV_WORDS = {
    "pleural_effusion": ("small", "moderate", "large"),
    "consolidation": ("patchy", "moderate", "dense"),
    "edema": ("mild", "moderate", "severe"),
    "pneumothorax": ("small", "moderate", "large"),
    "cardiomegaly": ("mild", "moderate", "severe"),
}
_CHEXPERT = {
    "pleural_effusion": "Pleural Effusion",
    "consolidation": "Consolidation",
    "pneumonia": "Pneumonia",
    "edema": "Edema",
    "pneumothorax": "Pneumothorax",
    "cardiomegaly": "Cardiomegaly",
}
_TEMPLATES = {
    "baseline": ("{Full}.", "There is {a} {full}.", "{Full} is present."),
    "new": ("New {full}.", "There is a new {full}.", "Interval development of {a} {full}."),
    "increased": (
        "Increased {base}, now {sev}.",
        "Interval increase in the {base}.",
        "Worsening {base}, now {sev}.",
        "The {base} has increased since the prior study.",
    ),
    "decreased": (
        "Decreased {base}, now {sev}.",
        "Interval improvement in the {base}.",
        "Improving {base}, now {sev}.",
        "The {base} has decreased since the prior study.",
    ),
    "unchanged": (
        "Unchanged {full}.",
        "Stable {full}.",
        "{Full} is unchanged from the prior study.",
        "No significant change in the {full}.",
    ),
    "resolved": (
        "Interval resolution of the {base}.",
        "The previously seen {base} has resolved.",
        "{Base} has resolved.",
    ),
}
_HEDGED = ("Possible {full}.", "{A} {full} cannot be excluded.", "Findings may represent {a} {full}.")
_HEDGE_SUFFIX = {
    "new": " This is new.",
    "increased": " This has increased.",
    "decreased": " This has decreased.",
    "unchanged": " This is unchanged.",
    "baseline": "",
}
_NEGATIVES = {
    "cardiomegaly": (
        "Heart size is normal.",
        "The cardiac silhouette is within normal limits.",
        "Normal heart size.",
    ),
    "pleural_effusion": ("No pleural effusion.", "There is no pleural effusion."),
    "pneumothorax": ("No pneumothorax.", "There is no pneumothorax."),
    "consolidation": ("No focal consolidation.", "There is no focal consolidation."),
    "edema": ("No pulmonary edema.", "No evidence of pulmonary edema."),
    "pneumonia": ("No evidence of pneumonia.",),
}
_FILLER = (
    "No acute osseous abnormality.",
    "The mediastinal contours are normal.",
    "Degenerative changes of the thoracic spine.",
    "Hilar contours are unremarkable.",
)
_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary process.",
    "No acute intrathoracic abnormality.",
    "Normal chest radiograph.",
)
_INDICATIONS = (
    "___ year old {sex} with shortness of breath  // ?{q}",
    "___ year old {sex} with cough and fever  // eval for pneumonia",
    "History: ___{s} with chest pain",
    "___ year old {sex} with {q}  // {q}",
    "___{s} status post procedure, evaluate for pneumothorax",
    "Dyspnea, evaluate for interval change",
)
_TECHNIQUE = {
    "CHEST (PA AND LAT)": "Chest PA and lateral",
    "CHEST (PORTABLE AP)": "Portable AP chest radiograph",
    "CHEST (SINGLE VIEW)": "Single frontal view of the chest",
}
_ADDENDA = (
    "Findings were discussed with Dr. ___ by telephone at ___ on ___.",
    "The dictated side of the effusion was verified with the referring clinician at ___.",
    "Recommend follow-up radiograph after treatment.",
)


def _level(sev: float) -> int:
    return 0 if sev < 0.45 else (1 if sev < 0.7 else 2)


def phrases(name: str, sev: float, where: str, pneumonia: bool) -> dict[str, str]:
    """Noun phrases for one finding: full (with severity and place), base (place only), sev word, article."""
    sw = _SEV_WORDS[name][_level(sev)] if sev > 0 else _SEV_WORDS[name][0]
    if name == "pleural_effusion":
        noun = "pleural effusions" if where == "bilateral" else "pleural effusion"
        base, full = f"{where} {noun}", f"{sw} {where} {noun}"
    elif name == "consolidation":
        base, full = f"{where} consolidation", f"{sw} consolidation in the {where}"
    elif name == "edema":
        base, full = "pulmonary edema", f"{sw} pulmonary edema"
    elif name == "pneumothorax":
        base, full = f"{where} pneumothorax", f"{sw} {where} apical pneumothorax"
    else:
        base, full = "cardiomegaly", f"{sw} cardiomegaly"
    article = "an" if full[0] in "aeiou" else "a"
    if name in ("edema", "cardiomegaly", "consolidation"):
        article = ""  # uncountable: "mild pulmonary edema", "dense consolidation in ..."
    if name == "pleural_effusion" and where == "bilateral":
        article = ""  # plural: "There is small bilateral pleural effusions" reads oddly but stays parseable
    return {"full": full, "base": base, "sev": sw, "a": article}


def _fill(template: str, p: Mapping[str, str]) -> str:
    text = template.format(
        full=p["full"], Full=p["full"], base=p["base"], Base=p["base"], sev=p["sev"], a=p["a"], A=p["a"]
    )
    text = " ".join(text.split())
    if p["base"].endswith("effusions"):  # bilateral: plural verbs
        for singular, plural in _PLURAL:
            text = text.replace(singular, plural)
    return text[0].upper() + text[1:]


_PLURAL = (("There is a new", "There are new"), ("There is ", "There are "), ("This has", "These have"),
           ("This is unchanged", "These are unchanged"), ("This is new", "These are new"), (" has ", " have "),
           (" is unchanged", " are unchanged"), (" is present", " are present"),
           ("represent a ", "represent "), ("development of a ", "development of "))  # fmt: skip


def change_sentence(name: str, change: str, sev: float, where: str, pneumonia: bool, pick: int) -> str:
    """One sentence stating a finding and its change; `pick` chooses among equivalent phrasings."""
    p = phrases(name, sev, where, pneumonia)
    if change != "resolved" and 0 < sev < UNCERTAIN_BELOW:
        text = _fill(_HEDGED[pick % len(_HEDGED)] + _HEDGE_SUFFIX.get(change, ""), p)
    else:
        options = _TEMPLATES[change]
        text = _fill(options[pick % len(options)], p)
    if pneumonia and change != "resolved":
        strong = sev >= UNCERTAIN_BELOW
        text += (
            (" This is concerning for pneumonia.", " Findings are consistent with pneumonia.")[pick % 2]
            if strong
            else " Pneumonia is possible."
        )
    return text


def _wrap(text: str, width: int = 79) -> list[str]:
    """Greedy word wrap with MIMIC's leading space; lines never exceed `width` characters."""
    lines: list[str] = []
    cur = ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > width - 1:
            lines.append(" " + cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        lines.append(" " + cur)
    return lines


def _section(header: str, body: str | list[str], inline: bool = False) -> list[str]:
    if isinstance(body, list):
        return [f" {header}: ", " ", *body]
    if inline:  # MIMIC puts two spaces after an inline header
        lines = _wrap(f"{header}: {body}", width=78)
        return [lines[0].replace(f"{header}: ", f"{header}:  ", 1), *lines[1:]]
    return [f" {header}: ", " ", *_wrap(body)]


def compose(study: Mapping[str, Any], patient: Mapping[str, Any]) -> tuple[str, dict[str, float | None]]:
    """The report text of one study and its 14 CheXpert labels (1.0 / 0.0 / -1.0 / None for blank).

    `study` holds a row of the plan's studies table (sev_*, chg_*, procedure, report_variant, report_seed,
    study_index); `patient` a row of the patients table (sex, effusion_side, consolidation_lobe, ...).
    """
    rng = random.Random(int(study["report_seed"]))  # stdlib: cheap to seed per report, stable across versions
    variant = str(study["report_variant"])
    labels: dict[str, float | None] = dict.fromkeys(FINDINGS)
    where = {
        "pleural_effusion": str(patient["effusion_side"]),
        "consolidation": str(patient["consolidation_lobe"]),
        "edema": "",
        "pneumothorax": str(patient["pneumothorax_side"]),
        "cardiomegaly": "",
    }
    pneu = bool(patient["pneumonia_flag"])
    positives: list[str] = []
    negatives: list[str] = []
    for name in ("consolidation", "edema", "pleural_effusion", "pneumothorax", "cardiomegaly"):
        sev, chg = float(study[f"sev_{name}"]), str(study[f"chg_{name}"])
        pick = rng.randrange(12)
        if sev > 0 or chg == "resolved":
            sentence = change_sentence(name, chg, sev, where[name], pneu and name == "consolidation", pick)
            (positives if sev > 0 else negatives).append(sentence)
            value = 0.0 if sev == 0 else (1.0 if sev >= UNCERTAIN_BELOW else -1.0)
            labels[_CHEXPERT[name]] = value
            if name == "consolidation" and pneu:
                labels["Pneumonia"] = value
        elif rng.random() < 0.6:
            negatives.append(_NEGATIVES[name][pick % len(_NEGATIVES[name])])
            labels[_CHEXPERT[name]] = 0.0
    if labels["Consolidation"] is None and labels["Pneumonia"] is None and rng.random() < 0.2:
        negatives.append(_NEGATIVES["pneumonia"][0])
        labels["Pneumonia"] = 0.0
    opac = [labels["Consolidation"], labels["Edema"]]
    if 1.0 in opac:
        labels["Lung Opacity"] = 1.0
    elif -1.0 in opac:
        labels["Lung Opacity"] = -1.0
    any_present = any(float(study[f"sev_{n}"]) > 0 for n in _SEV_WORDS)
    if not any_present:
        labels["No Finding"] = 1.0
    if variant == "empty":
        return "", dict.fromkeys(FINDINGS)

    findings_text = " ".join(
        positives + negatives + ([_FILLER[rng.randrange(4)]] if rng.random() < 0.4 else [])
    )
    impression = positives if positives else [_NORMAL_IMPRESSION[rng.randrange(3)]]
    if not findings_text:
        findings_text = "The lungs are clear."
    first = int(study["study_index"]) == 0
    q = ["pleural effusion", "pneumonia", "edema", "pneumothorax", "CHF"][rng.randrange(5)]
    sex_word, s = ("woman", "F") if patient["sex"] == "F" else ("man", "M")
    indication = _INDICATIONS[rng.randrange(len(_INDICATIONS))].format(sex=sex_word, s=s, q=q)
    procedure = str(study["procedure"])
    lines = [HEADER]
    comparison = "None." if first else ("___" if rng.random() < 0.6 else "Chest radiograph from ___.")
    header_values: list[tuple[str, str]] = [
        ("EXAMINATION", procedure),
        ("INDICATION", indication),
        ("TECHNIQUE", _TECHNIQUE.get(procedure, "Chest radiographs")),
        ("COMPARISON", comparison),
    ]
    for header, section_text in header_values:
        lines += [*_section(header, section_text, inline=True), " "]
    imp_text = " ".join(impression)
    findings_head, impression_head = "FINDINGS", "IMPRESSION"
    if variant == "misspelled":
        kind = rng.randrange(3)
        if kind == 0:
            impression_head = "IMPRESSIONS"
        elif kind == 1:
            findings_head, variant = "FINDINGS/IMPRESSION", "findings_only"
        else:
            findings_head = "FINDNGS"
    if variant in ("standard", "addendum", "misspelled"):
        lines += [*_section(findings_head, findings_text), " ", *_section(impression_head, imp_text)]
    elif variant == "impression_only":
        lines += _section("IMPRESSION", " ".join(impression + negatives))
    elif variant == "findings_only":
        lines += _section(findings_head, findings_text)
    elif variant == "last_paragraph":
        lines += _wrap(findings_text)
    elif variant == "numbered":
        items = impression + negatives[:1] if len(impression) < 2 else impression
        if len(items) < 2:
            items = [*items, _FILLER[0]]
        numbered: list[str] = []
        for i, sentence in enumerate(items, 1):
            numbered += _wrap(f"{i}. {sentence}")
        lines += [*_section("FINDINGS", findings_text), " ", *_section("IMPRESSION", numbered)]
    if study["report_variant"] == "addendum":
        lines += [
            UNDERSCORES,
            " " * 32 + "FINAL ADDENDUM",
            *_wrap(f"ADDENDUM:  {_ADDENDA[rng.randrange(3)]}"),
        ]
    return "\n".join(lines) + "\n", labels
