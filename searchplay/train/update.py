"""Both roles' policy updates for one round: samples with advantages, then the learner's updates.

Rollouts that failed for infrastructure reasons are dropped first; the second role's old log-probs
are scored before the first update changes the weights. Used by the local trainer and, unchanged,
by every rank of the Ray learner group (each rank sees the whole round; the Learner splits the work).
"""

from __future__ import annotations

import math

import torch

from searchplay.agent.trajectory import Trajectory
from searchplay.config import Config, RoleConfig
from searchplay.game.selfplay import RoundResult
from searchplay.rl.advantages import compute_advantages
from searchplay.rl.learner import Learner, Sample


def role_samples(
    trajs: list[Trajectory],
    rewards: list[float],
    groups: list[int],
    excluded: list[bool],
    estimator: str,
    norm_std: bool,
    dynamic_sampling: bool,
    version: int,
    learner: Learner | None = None,
    kl_in_reward: float = 0.0,
    rft_min_reward: float = 1.0,
) -> list[Sample]:
    """Samples with advantages for one role.

    Rollouts that failed for infrastructure reasons (`excluded`) are dropped first, so they are
    neither trained on nor part of a group's baseline; with dynamic sampling, groups without
    signal are dropped too, and with `rft` every sample that is not confirmed. `version` is the
    learner version that generated the rollouts.
    """
    keep = [i for i, x in enumerate(excluded) if not x] if excluded else list(range(len(trajs)))
    if estimator == "rft":
        keep = [i for i in keep if confirmed(trajs[i], rewards[i], rft_min_reward)]
    elif dynamic_sampling:
        signal = set(informative([rewards[i] for i in keep], [groups[i] for i in keep], estimator == "reinforce_pp"))
        keep = [i for k, i in enumerate(keep) if k in signal]
    trajs, rewards, groups = [trajs[i] for i in keep], [rewards[i] for i in keep], [groups[i] for i in keep]
    samples = [Sample.from_trajectory(t, 0.0, version) for t in trajs]
    token_kl = learner.token_kl(samples) if (learner is not None and kl_in_reward > 0 and estimator == "reinforce_pp") else None
    masks = [t.loss_mask for t in trajs]
    for t, s, adv in zip(trajs, samples, compute_advantages(estimator, rewards, groups, masks, norm_std, token_kl, kl_in_reward)):
        s.advantage = adv
        t.meta["advantage"] = _mean_advantage(adv, t.loss_mask)  # logged with the trajectory
    return samples


def confirmed(traj: Trajectory, reward: float, min_reward: float) -> bool:
    """rft: a sample worth imitating. Its reward is at least `min_reward`, and a proposer's question was kept by
    the filters and the verifier (the referee, with game.verifier_model); no QA label is involved."""
    kept = traj.meta.get("role") != "proposer" or traj.meta.get("rejection") is None
    return kept and reward >= min_reward


def _mean_advantage(adv: float | torch.Tensor, mask: list[int]) -> float:
    """A sequence's advantage as one number: itself, or the mean over trained tokens of a per-token one."""
    if not isinstance(adv, torch.Tensor):
        return float(adv)
    trained = torch.tensor(mask, dtype=torch.bool)
    return float(adv[trained].mean()) if trained.any() else 0.0


def informative(rewards: list[float], groups: list[int], batch_baseline: bool = False) -> list[int]:
    """Indices of samples in groups that carry a learning signal.

    A group of several samples whose rewards all agree has none. A group of one sample (the
    proposer with one rollout per seed) has advantage = its reward, so it is dropped only when
    that reward is 0. With a baseline over the whole batch (`batch_baseline`, reinforce_pp) a batch
    whose rewards all agree has none either: its advantages are all 0, and an update would only move the
    shared weights by AdamW's momentum and the KL term (a v2 proposer whose 16 proposals were all rejected).
    """
    if batch_baseline and len(set(rewards)) <= 1:
        return []
    by_group: dict[int, list[float]] = {}
    for r, g in zip(rewards, groups):
        by_group.setdefault(g, []).append(r)
    return [i for i, g in enumerate(groups) if (len(by_group[g]) == 1 and by_group[g][0] != 0) or len(set(by_group[g])) > 1]


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k.split('/', 1)[1]}": v for k, v in metrics.items()}


def update_roles(learner: Learner, result: RoundResult, cfg: Config, step: int, version: int) -> dict[str, float]:
    """Both roles' updates for one round; old log-probs always come from the weights that sampled."""
    batches: dict[str, list[Sample]] = {}
    for role, rc in (("solver", cfg.solver), ("proposer", cfg.proposer)):
        if not updates_at(rc, step):
            batches[role] = []
            continue
        trajectories, rewards, groups, excluded = result.of(role)
        batches[role] = role_samples(
            trajectories, rewards, groups, excluded, rc.adv_estimator, rc.norm_std, cfg.trainer.dynamic_sampling,
            version, learner, cfg.learner.kl_in_reward_coef, rc.rft_min_reward,
        )  # fmt: skip
    solver, proposer = batches["solver"], batches["proposer"]
    if cfg.trainer.combine_update:  # the config allows it only with one temperature for both roles
        with learner.sampled_at(role_temperature(cfg, cfg.solver)):
            return _prefixed("update", learner.update(solver + proposer))
    roles = [("solver", solver), ("proposer", proposer)]
    if cfg.trainer.update_order == "proposer_first":
        roles.reverse()
    if roles[0][1] and roles[1][1]:  # the first update changes the weights: score the second role's rollouts now
        with learner.sampled_at(role_temperature(cfg, cfg.solver if roles[1][0] == "solver" else cfg.proposer)):
            learner.score_old(roles[1][1])
    metrics: dict[str, float] = {}
    for role, samples in roles:
        if role == "proposer" and not result.proposer:  # the supervised control has no proposer
            continue
        rc = cfg.solver if role == "solver" else cfg.proposer
        with learner.sampled_at(role_temperature(cfg, rc)):
            metrics.update(_prefixed(f"{role}_update", learner.update(samples, rc.lr_scale, rc.kl_scale)))
    return metrics


def role_temperature(cfg: Config, rc: RoleConfig) -> float:
    """The temperature a role's training rollouts were sampled at: its own, else rollout.temperature."""
    return rc.temperature or cfg.rollout.temperature


def updates_at(rc: RoleConfig, step: int) -> bool:
    """Whether a role is updated at `step`: trained at all, past its warm-up, and on its update_every beat."""
    return rc.train and step > rc.warmup_steps and step % rc.update_every == 0


def planned_optimizer_steps(cfg: Config) -> int:
    """Optimizer steps a run takes when every rollout yields a sample: the LR schedule's length.

    Per step and update: ceil(samples / mini_batch_size) mini-batches x ppo_epochs. Dynamic
    sampling, rejected questions and excluded rollouts can only make the real count smaller.
    """
    g, lc = cfg.game, cfg.learner
    proposer_n = 0 if g.mode == "supervised" else g.batch_size * g.proposer_n
    solver_n = g.batch_size * g.solver_n * (1 if g.mode == "supervised" else g.proposer_n)

    def batches(n: int) -> int:
        return math.ceil(n / (lc.mini_batch_size or n)) if n else 0

    total = 0
    for step in range(1, cfg.trainer.steps + 1):
        sizes = [solver_n if updates_at(cfg.solver, step) else 0, proposer_n if updates_at(cfg.proposer, step) else 0]
        total += batches(sum(sizes)) if cfg.trainer.combine_update else sum(batches(n) for n in sizes)
    return total * lc.ppo_epochs
