"""synth stage: a synthetic MIMIC-CXR-shaped archive (DICOM/JPG, reports, CSVs, truth, benchmark sets).

Modules: `trajectories` (the plan: patients, disease trajectories, studies, images), `phantom` (images),
`reports` (report text + CheXpert labels), `dicom_writer` (DICOM variants), `tables` (CSVs, truth table),
`archive` (layout and orchestration: `generate`), `benchmarks`, `preview`.
"""

from medst.schemas.synth import SynthSummary
from medst.synth.archive import generate

__all__ = ["SynthSummary", "generate"]
