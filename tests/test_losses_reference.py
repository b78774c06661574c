"""Straightforward per-sample, per-token loop versions of the SPEC §3 losses (the oracle for the vectorised ones),
and hand-computed cases that pin the loops themselves. Imported by the other loss tests and the benchmark."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def ce(logits: list[Tensor], target: int) -> Tensor:
    """Cross-entropy of one row given as a list of scalar logits."""
    row = torch.stack(logits)
    return -(row[target] - torch.logsumexp(row, dim=0))


def global_loop(u: Tensor, v: Tensor, t: float, not_negative: Tensor | None = None) -> Tensor:
    n = u.shape[0]

    def allowed(i: int, j: int) -> bool:
        return i == j or not_negative is None or not bool(not_negative[i, j])

    rows = [
        ce(
            [u[i] @ v[j] / t for j in range(n) if allowed(i, j)],
            [j for j in range(n) if allowed(i, j)].index(i),
        )
        for i in range(n)
    ]
    cols = [
        ce(
            [u[j] @ v[i] / t for j in range(n) if allowed(j, i)],
            [j for j in range(n) if allowed(j, i)].index(i),
        )
        for i in range(n)
    ]
    return torch.stack(rows).mean() + torch.stack(cols).mean()


def mha_weights(mha: nn.MultiheadAttention, query: Tensor, keys: list[Tensor]) -> Tensor:
    """Attention weights of the authors' layer: ``nn.MultiheadAttention(D, 1)`` with one query over ``keys``."""
    k = torch.stack(keys)[None]
    _, w = mha(query[None, None], k, k, need_weights=True)
    return w[0, 0]


def local_loop(
    words: Tensor,
    word_mask: Tensor,
    patches: Tensor,
    patch_mask: Tensor,
    word_mha: nn.MultiheadAttention,
    patch_mha: nn.MultiheadAttention,
    t: float,
    compat: str,
) -> tuple[Tensor, Tensor]:
    clean = compat == "clean"
    n = words.shape[0]
    word_terms: list[Tensor] = []
    patch_terms: list[Tensor] = []
    for s in range(n):
        wi = [i for i in range(words.shape[1]) if word_mask[s, i] or not clean]
        pj = [j for j in range(patches.shape[1]) if patch_mask[s, j] or not clean]
        real_words = [i for i in range(words.shape[1]) if word_mask[s, i]]
        w = {i: words[s, i] for i in range(words.shape[1])}
        p = {j: patches[s, j] for j in range(patches.shape[1])}
        # word side
        k, a = {}, {}
        for i in wi:
            att = torch.softmax(torch.stack([w[i] @ p[j] / t for j in pj]), dim=0)
            k[i] = F.normalize(torch.stack([att[x] * p[j] for x, j in enumerate(pj)]).sum(0), dim=0)
            a[i] = F.normalize(w[i] * k[i], dim=0)
        query = torch.stack([a[i] for i in wi]).mean(0)
        alpha = mha_weights(word_mha, query, [a[i] for i in wi])
        total = torch.zeros((), dtype=words.dtype)
        for x, i in enumerate(wi):
            row = ce([w[i] @ k[j] / t for j in wi], x)
            col = ce([w[j] @ k[i] / t for j in wi], x)
            total = total + alpha[x] * (row + col)
        word_terms.append(total)
        # patch side
        h, b = {}, {}
        for j in pj:
            att = torch.softmax(torch.stack([p[j] @ w[i] / t for i in real_words]), dim=0)
            h[j] = torch.stack([att[x] * w[i] for x, i in enumerate(real_words)]).sum(0)
            if clean:
                h[j] = F.normalize(h[j], dim=0)
            b[j] = F.normalize(p[j] * h[j], dim=0)
        query = torch.stack([b[j] for j in pj]).mean(0)
        beta = mha_weights(patch_mha, query, [b[j] for j in pj])
        total = torch.zeros((), dtype=words.dtype)
        for x, j in enumerate(pj):
            row = ce([p[j] @ h[m] / t for m in pj], x)
            col = ce([p[m] @ h[j] / t for m in pj], x)
            total = total + beta[x] * (row + col)
        patch_terms.append(total)
    return 0.5 * torch.stack(word_terms).mean(), 0.5 * torch.stack(patch_terms).mean()


def temporal_loop(
    u: Tensor,
    v: Tensor,
    sequence_index: Tensor,
    step_index: Tensor,
    lengths: Tensor,
    seq_len: int,
    tau: float,
    compat: str,
    lam: float = 0.001,
) -> tuple[Tensor, Tensor]:
    fmc_rows: list[Tensor] = []
    rmr_rows: list[Tensor] = []
    for b in range(len(lengths)):
        length = int(lengths[b])
        if (compat == "reference" and length != seq_len) or length < 2:
            continue
        rows = {int(step_index[r]): r for r in range(len(sequence_index)) if int(sequence_index[r]) == b}
        xs_u = [u[rows[k]] for k in range(length)]
        xs_v = [v[rows[k]] for k in range(length)]
        denom = seq_len + 1e-7 if compat == "reference" else length
        times = [k / denom for k in range(length)]
        for x, y in ((xs_u, xs_v), (xs_v, xs_u)):
            for i in range(length):
                z = [-((x[i] - y[j]) ** 2).sum() / tau for j in range(length)]
                fmc = ce(z, i)
                beta = torch.softmax(torch.stack(z), dim=0)
                y_soft = torch.stack([beta[j] * y[j] for j in range(length)]).sum(0)
                alpha = torch.softmax(
                    torch.stack([-((y_soft - x[k]) ** 2).sum() / tau for k in range(length)]), 0
                )
                mu = torch.stack([alpha[k] * times[k] for k in range(length)]).sum()
                var = torch.stack([alpha[k] * (times[k] - mu) ** 2 for k in range(length)]).sum()
                rmr = (times[i] - mu) ** 2 / (var + 1e-7) + lam * torch.log(var + 1e-7)
                fmc_rows.append(fmc)
                rmr_rows.append(rmr)
    if not fmc_rows:
        return torch.zeros(()), torch.zeros(())
    # Each row carries both directions, so the sum over rows / rows-per-direction is the sum of the two means.
    count = len(fmc_rows) / 2
    return torch.stack(fmc_rows).sum() / count, torch.stack(rmr_rows).sum() / count


def test_global_loop_hand_case() -> None:
    eye = torch.eye(2, dtype=torch.float64)
    expected = 2 * math.log(1 + math.exp(-1))
    assert abs(float(global_loop(eye, eye, 1.0)) - expected) < 1e-12


def test_temporal_loop_hand_case() -> None:
    eye = torch.eye(2, dtype=torch.float64)
    fmc, rmr = temporal_loop(
        eye, eye, torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([2]), 4, 1.0, "clean"
    )
    assert abs(float(fmc) - 2 * math.log(1 + math.exp(-2))) < 1e-12
    sig = 1 / (1 + math.exp(-2))
    d_near = 2 * (1 - sig) ** 2
    d_far = 2 * sig**2
    a0 = 1 / (1 + math.exp(-(d_far - d_near)))
    mu = (1 - a0) * 0.5
    var = 0.25 * a0 * (1 - a0)
    expected_rmr = 2 * (mu**2 / (var + 1e-7) + 0.001 * math.log(var + 1e-7))
    assert abs(float(rmr) - expected_rmr) < 1e-9
