"""No host syncs in the training step: the Med-ST forward, backward, gradient clipping and fused AdamW step run
under `forbid_host_syncs` (the dispatcher-level twin of ``torch.cuda.set_sync_debug_mode("error")``) on the CPU;
and the BERT key mask built to avoid transformers' ``mask.all()`` gives the same encoder outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medst.model import ModelConfig, TextConfig
from medst.model.dummy import random_batch
from medst.model.medst import MedST
from medst.model.text import TextEncoder
from medst.train.host_sync import HostSyncError, forbid_host_syncs


def test_finder_catches_the_syncs_it_is_meant_to_catch() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    for read in (
        lambda: x.sum().item(),
        lambda: bool((x > 0).all()),
        lambda: int(x.argmax()),
        lambda: x[x > 0],  # boolean indexing sizes its output by the data
        lambda: torch.nonzero(x),
    ):
        with pytest.raises(HostSyncError, match=r"test_train_host_syncs\.py"), forbid_host_syncs():
            read()
    with forbid_host_syncs() as found:
        y = torch.where(x > 0, x, 0.0).sum() * 2  # the sync-free way
        y.backward()
    assert found == [] and torch.equal(x.grad, torch.tensor([2.0, 0.0, 2.0]))  # type: ignore[arg-type]


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_training_step_has_no_host_sync(compat: str) -> None:
    config = ModelConfig.preset("tiny", compat=compat)
    torch.manual_seed(0)
    model = MedST(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)  # the trainer's CUDA optimizer
    batch = random_batch(config, (3, 4, 2), lateral_fraction=0.5, seed=1)
    before = [p.detach().clone() for p in model.parameters()]
    with forbid_host_syncs():
        out = model(batch)
        out.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    # The step really ran: a finite loss, a gradient, and every trainable weight moved.
    assert torch.isfinite(out.loss) and grad_norm > 0
    moved = [
        not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True) if p.requires_grad
    ]
    assert all(moved)


def test_step_without_num_lateral_is_found_to_sync() -> None:
    """The host-side lateral count is what keeps the split sync-free: a batch without it reads the GPU."""
    config = ModelConfig.preset("tiny")
    model = MedST(config).train()
    batch = random_batch(config, (2, 2), lateral_fraction=0.5, seed=2)
    batch.num_lateral = None
    with forbid_host_syncs(raise_on_sync=False) as found:
        model(batch).loss.backward()
    assert len(found) == 1 and "vit.py" in found[0]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_prepared_key_mask_gives_the_same_bert_outputs(implementation: str, compat: str) -> None:
    from transformers import BertConfig, BertModel

    text = TextConfig(
        vocab_size=50, hidden=32, layers=2, heads=4, intermediate=64, max_length=12, num_layers=2
    )
    bert_config = BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        attn_implementation=implementation,
    )  # fmt: skip
    torch.manual_seed(0)
    encoder = TextEncoder(text, compat, BertModel(bert_config, add_pooling_layer=False)).double().eval()
    assert encoder.bert.config._attn_implementation == implementation
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 50, (4, 12), generator=g)
    lengths = torch.tensor([12, 5, 3, 8])
    attention_mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    word_ids = torch.where(attention_mask.bool(), torch.arange(12)[None, :], -1)
    with forbid_host_syncs():
        cls, words, word_mask = encoder(input_ids, attention_mask, word_ids)
    # transformers' own path from the 2-D mask (which asks mask.all() on the host).
    position_ids = torch.zeros_like(input_ids) if compat == "reference" else None
    hidden = encoder.bert(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    hidden = hidden.last_hidden_state
    torch.testing.assert_close(cls, hidden[:, 0], rtol=1e-12, atol=1e-12)
    # Padding really is masked: changing a padded token changes nothing of the real tokens.
    changed = input_ids.clone()
    changed[1, 7] = 6 if changed[1, 7] != 6 else 7
    cls2, words2, _ = encoder(changed, attention_mask, word_ids)
    torch.testing.assert_close(cls2, cls, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(words2[word_mask], words[word_mask], rtol=1e-12, atol=1e-12)
    unmasked = encoder(changed, torch.ones_like(attention_mask), word_ids)[0]
    assert not torch.allclose(unmasked[1], cls[1])


def test_a_training_run_syncs_only_to_log(tmp_path: Path) -> None:
    """`medst pretrain`'s loop on real shards: the model, the losses and BERT never read the device back; the loop
    itself only when it logs (the window's loss sums, every log_every steps) and in the CPU's unfused AdamW (its
    step counters are CPU tensors on every device; CUDA runs the fused kernel)."""
    from train_shards import make_tiny_shards

    from medst.schemas.train import resolve_config
    from medst.train.loop import pretrain

    shards = make_tiny_shards(tmp_path / "data")
    options = {
        "shards": shards, "out": tmp_path / "run", "steps": 4, "batch_size": 2, "num_workers": 0,
        "device": "cpu", "progress": False, "export": False, "tensorboard": False, "val_every": None,
        "ckpt_every": None, "log_every": 2,
    }  # fmt: skip
    config = resolve_config("demo", options)
    with forbid_host_syncs(raise_on_sync=False) as found:
        summary = pretrain(config)
    assert summary.steps == 4 and summary.last_loss is not None
    building = "nn.init."  # weight initialisation, before the first step
    in_step = [f for f in found if building not in f and any(
        part in f for part in ("/medst/model/", "/medst/losses/", "/medst/batch.py", "/transformers/")
    )]  # fmt: skip
    assert in_step == []
    loop = [f for f in found if "/medst/train/loop.py:" in f]
    assert loop and all("optimizer.step()" in f or "float(v) / window_steps" in f for f in loop), loop
    logged = [f for f in loop if "window_steps" in f]
    assert len(logged) >= 2 and len(logged) % 2 == 0  # two log events (steps 2 and 4), the same keys
