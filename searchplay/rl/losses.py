"""Token-level policy-gradient losses: PPO clip (asymmetric, optional dual clip), KL, entropy.

Every function takes a `mask` (1 on model-generated tokens) and masked positions contribute
exactly nothing: their terms are multiplied by 0 before aggregation, so their gradients are 0.
Aggregation normalisers are passed in (`tokens` or `sequences` of the whole mini-batch), so that
splitting a mini-batch into micro-batches for gradient accumulation does not change the loss.
"""

from __future__ import annotations

from typing import Literal

import torch

LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
KLEstimator = Literal["k1", "k2", "k3", "low_var_kl"]


def ppo_clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.285,
    dual_clip: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped surrogate loss and a per-token 'was clipped' indicator."""
    ratio = torch.exp((logp - old_logp).clamp(-20, 20))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip_low, 1 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = (clipped > unclipped).float()
    if dual_clip > 1.0:  # bound the loss of negative-advantage tokens whose ratio exploded
        capped = torch.minimum(loss, -adv * dual_clip)
        loss = torch.where(adv < 0, capped, loss)
    return loss * mask, was_clipped * mask


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: KLEstimator = "low_var_kl") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens (Schulman's k1, k2, k3)."""
    diff = logp - ref_logp
    if estimator == "k1":
        return diff
    if estimator == "k2":
        return 0.5 * diff.square()
    if estimator in ("k3", "low_var_kl"):
        return (torch.exp(-diff) + diff - 1).clamp(-10, 10)  # exp(ref - logp) - (ref - logp) - 1 >= 0
    raise ValueError(f"unknown KL estimator {estimator!r}; use k1, k2, k3 or low_var_kl")


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: LossAgg, tokens: float, sequences: float) -> torch.Tensor:
    """Reduce a (batch, time) masked loss; `tokens`/`sequences` count the whole mini-batch."""
    values = values * mask
    if mode == "token-mean":
        return values.sum() / max(tokens, 1.0)
    per_seq = values.sum(-1)
    if mode == "seq-mean-token-mean":
        per_seq = per_seq / mask.sum(-1).clamp(min=1)
    elif mode != "seq-mean-token-sum":
        raise ValueError(f"unknown loss aggregation {mode!r}")
    return per_seq.sum() / max(sequences, 1.0)
