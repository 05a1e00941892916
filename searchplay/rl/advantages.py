"""Advantage estimators for outcome rewards, chosen per role.

All take one scalar reward per sequence and return per-sequence advantages, except
REINFORCE++ with KL-in-reward, which returns per-token advantages (the KL penalty makes the
return differ along the sequence). The Learner broadcasts scalars over response tokens.

- `grpo`: within each group (the n rollouts of one prompt), (r - mean) / std, or r - mean with
  `norm_std=False`. A one-sample group has no baseline: its advantage is its reward (mean 0,
  std 1). An all-equal group gets 0.
- `rloo`: leave-one-out baseline, r_i - mean of the other rewards of the group.
- `reinforce_pp`: REINFORCE++ — per-token returns (the reward, optionally minus kl_coef times
  the KL still to come) whitened over the trained tokens (loss mask 1) of the whole batch: the
  batch mean is the baseline, each sequence weighted by its trained-token count. Masked
  positions (prompt, retrieved documents, inserted tags) get 0 and take no part in the statistics.
- `rft`: rejection-sampling fine-tuning (expert iteration): every sample gets advantage 1, so the
  clipped objective's first gradient is that of the samples' log-likelihood. The caller passes
  only the confirmed samples (train/update.py); the rest are not trained on at all.
"""

from __future__ import annotations

from collections import defaultdict

import torch

EPS = 1e-6


def _groups(groups: list[int]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        out[g].append(i)
    return out


def grpo(rewards: list[float], groups: list[int], norm_std: bool = True) -> list[float]:
    adv = [0.0] * len(rewards)
    for members in _groups(groups).values():
        r = torch.tensor([rewards[i] for i in members], dtype=torch.float64)
        if len(members) == 1:
            values = r
        else:
            centred = r - r.mean()
            values = centred / (r.std() + EPS) if norm_std else centred
        for i, v in zip(members, values.tolist()):
            adv[i] = v
    return adv


def rloo(rewards: list[float], groups: list[int]) -> list[float]:
    adv = [0.0] * len(rewards)
    for members in _groups(groups).values():
        if len(members) == 1:
            adv[members[0]] = rewards[members[0]]
            continue
        total = sum(rewards[i] for i in members)
        for i in members:
            adv[i] = rewards[i] - (total - rewards[i]) / (len(members) - 1)
    return adv


def reinforce_pp(
    rewards: list[float], masks: list[list[int]], token_kl: list[torch.Tensor] | None = None, kl_coef: float = 0.0
) -> list[torch.Tensor]:
    """Per-token REINFORCE++ advantages over response positions, whitened over trained tokens only."""
    returns, where = [], []
    for i, (r, mask) in enumerate(zip(rewards, masks)):
        m = torch.tensor(mask, dtype=torch.bool)
        if token_kl is not None and kl_coef > 0:
            penalty = -kl_coef * token_kl[i].double() * m
            returns.append(penalty.flip(0).cumsum(0).flip(0) + r)
        else:
            returns.append(torch.full((len(mask),), float(r), dtype=torch.float64))
        where.append(m)
    if not returns:
        return []
    trained = torch.cat([x[m] for x, m in zip(returns, where)])
    if trained.numel() == 0:
        return [torch.zeros(len(m)) for m in masks]
    mean = trained.mean()
    std = trained.std() if trained.numel() > 1 else torch.tensor(1.0, dtype=torch.float64)
    return [(((x - mean) / (std + EPS)) * m).float() for x, m in zip(returns, where)]


def compute_advantages(
    kind: str,
    rewards: list[float],
    groups: list[int],
    masks: list[list[int]],
    norm_std: bool = True,
    token_kl: list[torch.Tensor] | None = None,
    kl_coef: float = 0.0,
) -> list[torch.Tensor | float]:
    """The configured estimator; scalars per sequence, or tensors per response token (reinforce_pp)."""
    if kind == "grpo":
        return list(grpo(rewards, groups, norm_std))
    if kind == "rloo":
        return list(rloo(rewards, groups))
    if kind == "reinforce_pp":
        return list(reinforce_pp(rewards, masks, token_kl, kl_coef))
    if kind == "rft":
        return [1.0] * len(rewards)
    raise ValueError(f"unknown advantage estimator {kind!r}; use grpo, rloo, reinforce_pp or rft")
