"""Advantage estimators and losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from searchplay.rl.advantages import compute_advantages, grpo, reinforce_pp, rloo
from searchplay.rl.losses import aggregate, kl_penalty, ppo_clip_loss
from searchplay.train.trainer import informative


def test_grpo_hand_computed() -> None:
    adv = grpo([1.0, 0.0, 0.0, 5.0, 2.0], [0, 0, 0, 1, 2])
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased std of [1, 0, 0]
    assert adv[:3] == pytest.approx([(2 / 3) / std, -(1 / 3) / std, -(1 / 3) / std], rel=1e-5)
    assert adv[3] == 5.0 and adv[4] == 2.0  # one-sample groups: advantage = reward
    assert grpo([0.7, 0.7, 0.7], [0, 0, 0]) == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)  # all-equal group
    assert grpo([1.0, 0.0], [0, 0], norm_std=False) == [0.5, -0.5]


def test_rloo_hand_computed() -> None:
    assert rloo([1.0, 0.0, 0.5], [0, 0, 0]) == pytest.approx([1 - 0.25, 0 - 0.75, 0.5 - 0.5])
    assert rloo([3.0], [7]) == [3.0]


def test_reinforce_pp_whitens_over_the_batch_and_folds_kl() -> None:
    adv = reinforce_pp([1.0, 0.0])
    assert torch.cat(adv).tolist() == pytest.approx([1 / math.sqrt(0.5) * 0.5, -1 / math.sqrt(0.5) * 0.5], rel=1e-4)
    kl = [torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.4])]
    out = reinforce_pp([1.0, 0.0], kl, kl_coef=1.0)
    raw = torch.tensor([1 - 0.3, 1 - 0.2, -0.4, -0.4], dtype=torch.float64)  # reward minus KL still to come
    expected = (raw - raw.mean()) / raw.std()
    assert torch.cat(out).tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        compute_advantages("ppo", [1.0], [0])


def test_ppo_clip_low_high_and_dual_clip() -> None:
    mask = torch.ones(1, 4)
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.0, 1.5, 0.5, 1.2]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clipped = ppo_clip_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.285)
    # ratio 1.0 -> -1; 1.5 with A>0 clipped high at 1.285 -> -1.285; 0.5 with A<0 clipped low at 0.8 -> 0.8; 1.2 A<0 -> 1.2
    assert loss.tolist()[0] == pytest.approx([-1.0, -1.285, 0.8, 1.2], rel=1e-5)
    assert clipped.tolist()[0] == [0.0, 1.0, 1.0, 0.0]
    big = torch.log(torch.tensor([[10.0]]))
    dual, _ = ppo_clip_loss(big, torch.zeros(1, 1), torch.tensor([[-1.0]]), torch.ones(1, 1), dual_clip=3.0)
    assert dual.item() == pytest.approx(3.0)  # -A * c instead of -A * 10


def test_kl_estimators() -> None:
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    d = math.log(2)
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(d)
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 - 1 + d)  # exp(-d) + d - 1
    assert kl_penalty(logp, ref, "low_var_kl").item() == kl_penalty(logp, ref, "k3").item()
    assert kl_penalty(ref, ref, "k3").item() == 0.0


def test_aggregation_modes() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert aggregate(values, mask, "token-mean", 3, 2).item() == pytest.approx(7 / 3)
    assert aggregate(values, mask, "seq-mean-token-mean", 3, 2).item() == pytest.approx((1.5 + 4) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum", 3, 2).item() == pytest.approx((3 + 4) / 2)


def test_dynamic_sampling_keeps_single_sample_groups_with_a_reward() -> None:
    """Proposer groups are one rollout per seed: advantage = reward, so they must not be dropped as 'no variance'."""
    rewards = [1.0, 1.0, 0.0, 1.0, 0.5, 0.0]
    groups = [0, 0, 1, 1, 2, 3]  # group 0 all agree; group 1 differs; 2 and 3 are single samples
    assert informative(rewards, groups) == [2, 3, 4]
