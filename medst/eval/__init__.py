"""`medst eval`: the paper's four benchmarks plus retrieval, each in the authors' protocol and a clean one.

Modules: `readers` (published file layouts), `splits` (RSNA patient split from ``data_manifests/``), `features`
(batched, cached frozen features through the inference API), `metrics` (accuracy, macro accuracy, AUROC, F1,
R@k, bootstrap CI, threshold selection), one module per task (`mscxrt_image`, `mscxrt_sentence`, `rsna`,
`covidx`, `retrieval`), `report` (results.json, results.md, plots) and `run` (``evaluate(config) -> Results``).

Where we follow the authors' code (SVT-Yang/MedST ``temporal_test.py``, ``zeroshot_RSNA.py``, MGCA preprocessing)
rather than a looser reading of the paper, and where we differ:
- MS-CXR-T image: ``SVC(kernel="linear", C=1)`` (their classifier, one-vs-one), rows shuffled with
  ``df.sample(frac=1, random_state=seed)`` then ``StratifiedKFold(k)`` without shuffling; accuracy = mean of fold
  accuracies; std over seeds is the population std (``np.std``). Findings with too few labelled rows for k folds
  are skipped with a note (only on small synthetic sets).
- MS-CXR-T sentence: ``KFold(10)`` without shuffling, threshold grid 0..1 step 0.005, strict ``>``. The clean
  variant searches -1..1 (cosines can be negative) and never looks at test folds.
- RSNA: the authors average *unnormalised* prompt embeddings; SPEC (and we) average normalised ones.
- COVIDx: 80/20 train/val split with ``random_state=0`` as their preprocessing; the probe keeps the weights of
  the best validation loss (their checkpoint callback) and is scored once on ``test.txt``.
- Every number carries a percentile bootstrap 95% CI over rows (queries for retrieval) and the chance level.
"""
