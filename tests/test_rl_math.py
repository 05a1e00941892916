"""Advantage estimators and losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from searchplay.rl.advantages import compute_advantages, grpo, reinforce_pp, rloo
from searchplay.rl.losses import aggregate, kl_penalty, ppo_clip_loss
from searchplay.train.update import informative


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


def test_reinforce_pp_whitens_over_trained_tokens_only_and_folds_kl() -> None:
    # sequence 0: 3 trained tokens; sequence 1: 1 trained token among 4 masked (retrieved) ones
    masks = [[1, 1, 1], [0, 0, 1, 0, 0]]
    adv = reinforce_pp([1.0, 0.0], masks)
    trained = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)  # per-token returns at trained positions
    expected = ((trained - trained.mean()) / trained.std()).tolist()
    assert adv[0].tolist() == pytest.approx(expected[:3], rel=1e-4)
    assert adv[1].tolist() == pytest.approx([0.0, 0.0, expected[3], 0.0, 0.0], rel=1e-4, abs=1e-6)
    assert adv[0].mean() > 0 > adv[1][2]  # the baseline is the token-weighted batch mean 0.75, not 0.5
    kl = [torch.tensor([0.1, 0.2]), torch.tensor([0.0, 0.4])]
    out = reinforce_pp([1.0, 0.0], [[1, 1], [1, 1]], kl, kl_coef=1.0)
    raw = torch.tensor([1 - 0.3, 1 - 0.2, -0.4, -0.4], dtype=torch.float64)  # reward minus KL still to come
    expected = (raw - raw.mean()) / raw.std()
    assert torch.cat(out).tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    assert reinforce_pp([], []) == [] and compute_advantages("reinforce_pp", [], [], []) == []  # a role with no rollouts
    with pytest.raises(ValueError, match="unknown advantage estimator"):
        compute_advantages("ppo", [1.0], [0], [[1]])


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


def test_a_batch_baseline_batch_whose_rewards_all_agree_is_not_trained_on() -> None:
    """reinforce_pp whitens over the batch: 16 rejected proposals at -0.5 all get advantage 0, and an update on
    them would only move the shared weights (AdamW's momentum, the KL term)."""
    from searchplay.agent.trajectory import Trajectory
    from searchplay.train.update import role_samples

    rejected = [-0.5] * 4
    assert informative(rejected, [0, 1, 2, 3], batch_baseline=True) == []
    assert informative(rejected, [0, 1, 2, 3]) == [0, 1, 2, 3]  # a per-group baseline keeps its raw rewards
    assert informative([-0.5, -0.5, 1.0], [0, 1, 2], batch_baseline=True) == [0, 1, 2]
    trajs = []
    for _ in range(4):
        t = Trajectory([1, 2])
        t.append([3, 4], True)
        trajs.append(t)
    kept = role_samples(trajs, rejected, [0, 1, 2, 3], [False] * 4, "reinforce_pp", True, True, 0)
    assert kept == []
    assert len(role_samples(trajs, rejected, [0, 1, 2, 3], [False] * 4, "reinforce_pp", True, False, 0)) == 4


def test_planned_optimizer_steps_count_mini_batches_epochs_and_updates() -> None:
    from searchplay.config import load_config
    from searchplay.train.update import planned_optimizer_steps

    cfg = load_config(
        None,
        [
            "game.batch_size=4",
            "game.proposer_n=1",
            "game.solver_n=4",
            "learner.mini_batch_size=8",
            "learner.ppo_epochs=2",
            "trainer.steps=3",
        ],
    )
    # per step: solver 16 samples -> 2 mini-batches, proposer 4 -> 1; x 2 epochs; x 3 steps
    assert planned_optimizer_steps(cfg) == 3 * (2 + 1) * 2
    cfg.proposer.warmup_steps = 1  # the proposer is not updated at step 1
    assert planned_optimizer_steps(cfg) == (2 * 3 + 2) * 2
    cfg.trainer.combine_update = True  # one update of 16 + 4 samples: 3 mini-batches (2 at step 1)
    assert planned_optimizer_steps(cfg) == (2 + 3 + 3) * 2
    cfg.game.mode = "supervised"  # no proposer: batch_size questions x solver_n
    assert planned_optimizer_steps(cfg) == 3 * 2 * 2
