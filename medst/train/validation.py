"""Precision context and validation of a run: loss terms, in-batch and whole-split retrieval."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from medst.schemas.train import PretrainConfig
from medst.train.distributed import DistInfo, all_reduce_mean


def autocast_for(config: PretrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when the config asks for it (``auto``: on CUDA only), otherwise a no-op context."""
    use_bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def validate(model: Any, loader: Any, config: PretrainConfig, info: DistInfo) -> dict[str, float]:
    """Mean loss, loss terms and model metrics (in-batch retrieval accuracy) over the validation split, averaged
    over ranks; ``chance_top1`` is the in-batch accuracy of guessing (mean of 1 / studies per batch).

    Also image-to-report and report-to-image recall at 1 and 5 over all validation studies seen by this rank
    (``split_r1_i2t`` ...), with their chance levels (``split_chance_r1``, ``split_chance_r5`` = k / studies):
    steadier than in-batch accuracy on a small split.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    batches = 0
    image_emb: list[torch.Tensor] = []
    text_emb: list[torch.Tensor] = []
    with torch.random.fork_rng(devices=[]):
        # Always the same batches: epoch 0 from its first batch (a capped pass leaves the loader mid-epoch).
        loader.load_state_dict({"epoch": 0, "batches_consumed": 0})
        for batch in loader:
            batch = batch.to(info.device, non_blocking=True)
            with autocast_for(config, info.device):
                out = model(batch)
            values = {"loss": float(out.loss), **{f"loss_{k}": float(v) for k, v in out.terms.items()}}
            values.update({k: float(v) for k, v in out.metrics.items()})
            values["chance_top1"] = 1.0 / batch.num_studies
            if hasattr(model, "encode_image") and hasattr(model, "encode_text"):
                with autocast_for(config, info.device):
                    image_emb.append(
                        model.encode_image(
                            batch.frontal, batch.lateral, batch.has_lateral, batch.num_lateral
                        ).embedding
                    )
                    text_emb.append(
                        model.encode_text(batch.input_ids, batch.attention_mask, batch.word_ids).embedding
                    )
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            batches += 1
            if config.val_batches is not None and batches >= config.val_batches:
                break
    model.train(was_training)
    means = {k: v / max(1, batches) for k, v in sums.items()}
    if image_emb:
        means.update(split_recall(torch.cat(image_emb).float(), torch.cat(text_emb).float()))
    return all_reduce_mean(means, info)


def split_recall(image: torch.Tensor, text: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Recall@k of matching study ``i``'s image ``image[i]`` with its report ``text[i]`` (and back) among all
    ``n`` studies, by cosine similarity, with chance levels ``k / n``. ``image``, ``text``: ``[n, d]``."""
    sims = image @ text.T
    n = sims.shape[0]
    target = torch.arange(n, device=sims.device)
    # Rank of the true partner: how many candidates score strictly higher.
    rank_i2t = (sims > sims[target, target][:, None]).sum(dim=1)
    rank_t2i = (sims[target, target][:, None] < sims.T).sum(dim=1)
    out: dict[str, float] = {}
    for k in ks:
        out[f"split_r{k}_i2t"] = float((rank_i2t < k).float().mean())
        out[f"split_r{k}_t2i"] = float((rank_t2i < k).float().mean())
        out[f"split_chance_r{k}"] = min(1.0, k / n)
    return out
