"""Advantage estimators for outcome rewards, chosen per role.

All take one scalar reward per sequence and return per-sequence advantages, except
REINFORCE++ with KL-in-reward, which returns per-token advantages (the KL penalty makes the
return differ along the sequence). The Learner broadcasts scalars over response tokens.

- `grpo`: within each group (the n rollouts of one prompt), (r - mean) / std, or r - mean with
  `norm_std=False`. A one-sample group has no baseline: its advantage is its reward (mean 0,
  std 1). An all-equal group gets 0.
- `rloo`: leave-one-out baseline, r_i - mean of the other rewards of the group.
- `reinforce_pp`: REINFORCE++ — returns (optionally minus beta * the KL still to come) whitened
  over the whole batch.
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


def reinforce_pp(rewards: list[float], token_kl: list[torch.Tensor] | None = None, kl_coef: float = 0.0) -> list[torch.Tensor]:
    """Per-token REINFORCE++ advantages: return-to-go of (reward at the end, -kl_coef * kl per token), whitened."""
    returns = []
    for i, r in enumerate(rewards):
        if token_kl is not None and kl_coef > 0:
            penalty = -kl_coef * token_kl[i].double()
            to_go = penalty.flip(0).cumsum(0).flip(0)
            returns.append(to_go + r)
        else:
            n = token_kl[i].numel() if token_kl is not None else 1
            returns.append(torch.full((n,), float(r), dtype=torch.float64))
    flat = torch.cat(returns)
    mean, std = flat.mean(), flat.std() if flat.numel() > 1 else torch.tensor(1.0, dtype=torch.float64)
    return [((x - mean) / (std + EPS)).float() for x in returns]


def compute_advantages(kind: str, rewards: list[float], groups: list[int], norm_std: bool = True,
                       token_kl: list[torch.Tensor] | None = None, kl_coef: float = 0.0) -> list[torch.Tensor | float]:
    """The configured estimator; scalars per sequence, or tensors per token (reinforce_pp)."""
    if kind == "grpo":
        return list(grpo(rewards, groups, norm_std))
    if kind == "rloo":
        return list(rloo(rewards, groups))
    if kind == "reinforce_pp":
        return list(reinforce_pp(rewards, token_kl, kl_coef))
    raise ValueError(f"unknown advantage estimator {kind!r}; use grpo, rloo or reinforce_pp")
