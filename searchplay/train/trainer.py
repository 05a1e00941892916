"""The self-play training loop.

    for each step:
        play_round                      proposer rollouts -> verification -> solver rollouts -> rewards
                                        (game.mode = "supervised": labelled questions, solver only)
        drop infrastructure failures    failed searches / judge calls are not the model's failure
        score the second role's old     log-probs, before the first update changes the weights
        update the solver               advantages per solver.adv_estimator over question groups
        update the proposer             (after proposer.warmup_steps) over seed groups
                                        (trainer.update_order: solver first, or proposer first as SSP)
        log                             metrics.jsonl (+ TensorBoard / wandb), sampled trajectories
        evaluate every eval_every       fixed slices of QA sets, greedy, EM/cover EM/F1 (+ judge accuracy)
                                        (eval/evaluate.py); also before training with eval_before_training
        pool maintenance                every pool_clear_interval steps keep the newest keep_ratio
        checkpoint every save_every     model + optimizer + RNG + pool position, atomically

Generation and learning share one in-memory fp32 model (the engine autocasts to bf16); with
model.engine = "vllm" the engine is vLLM, loaded from the same weights and sent the learner's
new weights in memory after every update (timing/weight_sync_s).
Resuming loads the latest checkpoint, cuts the pool log and metrics back to that step (events
written after it belonged to a step that is now played again) and continues; a run killed before
its first checkpoint starts again from step 1. The run folder is written only once the model,
retriever and seeds have loaded, so a run that cannot start leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from searchplay.agent.trajectory import Trajectory
from searchplay.assets.names import model_path
from searchplay.config import Config, validate_for_training
from searchplay.eval.data import dataset_label, load_dataset
from searchplay.eval.evaluate import evaluate, judge_accuracy, judge_predictions, summarize
from searchplay.game.pool import QuestionPool
from searchplay.game.selfplay import RoundResult
from searchplay.jsonl import atomic_write, random_state
from searchplay.llm.base import Engine
from searchplay.llm.device import DeviceError, resolve_device
from searchplay.llm.transformers_engine import TransformersEngine, load_model
from searchplay.llm.vllm_engine import VLLMEngine, vllm_installed
from searchplay.outdir import check_output_dir
from searchplay.rl.advantages import compute_advantages
from searchplay.rl.learner import Learner, Sample
from searchplay.train.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from searchplay.train.components import build_components
from searchplay.train.logging import MetricsLogger
from searchplay.train.run_dir import RunDir


class TrainError(RuntimeError):
    """A run that cannot start or resume; the message says why."""


@dataclass
class TrainSummary:
    run_dir: Path
    steps: int
    last_metrics: dict[str, Any]
    checkpoint: Path | None
    seconds: float


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
) -> list[Sample]:
    """Samples with advantages for one role.

    Rollouts that failed for infrastructure reasons (`excluded`) are dropped first, so they are
    neither trained on nor part of a group's baseline; with dynamic sampling, groups without
    signal are dropped too. `version` is the learner version that generated the rollouts.
    """
    keep = [i for i, x in enumerate(excluded) if not x] if excluded else list(range(len(trajs)))
    if dynamic_sampling:
        signal = set(informative([rewards[i] for i in keep], [groups[i] for i in keep]))
        keep = [i for k, i in enumerate(keep) if k in signal]
    trajs, rewards, groups = [trajs[i] for i in keep], [rewards[i] for i in keep], [groups[i] for i in keep]
    samples = [Sample.from_trajectory(t, 0.0, version) for t in trajs]
    token_kl = learner.token_kl(samples) if (learner is not None and kl_in_reward > 0 and estimator == "reinforce_pp") else None
    masks = [t.loss_mask for t in trajs]
    for t, s, adv in zip(trajs, samples, compute_advantages(estimator, rewards, groups, masks, norm_std, token_kl, kl_in_reward)):
        s.advantage = adv
        t.meta["advantage"] = _mean_advantage(adv, t.loss_mask)  # logged with the trajectory
    return samples


def _mean_advantage(adv: float | torch.Tensor, mask: list[int]) -> float:
    """A sequence's advantage as one number: itself, or the mean over trained tokens of a per-token one."""
    if not isinstance(adv, torch.Tensor):
        return float(adv)
    trained = torch.tensor(mask, dtype=torch.bool)
    return float(adv[trained].mean()) if trained.any() else 0.0


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
        sizes = [solver_n if step > cfg.solver.warmup_steps else 0, proposer_n if step > cfg.proposer.warmup_steps else 0]
        total += batches(sum(sizes)) if cfg.trainer.combine_update else sum(batches(n) for n in sizes)
    return total * lc.ppo_epochs


def informative(rewards: list[float], groups: list[int]) -> list[int]:
    """Indices of samples in groups that carry a learning signal.

    A group of several samples whose rewards all agree has none. A group of one sample (the
    proposer with one rollout per seed) has advantage = its reward, so it is dropped only when
    that reward is 0.
    """
    by_group: dict[int, list[float]] = {}
    for r, g in zip(rewards, groups):
        by_group.setdefault(g, []).append(r)
    return [i for i, g in enumerate(groups) if (len(by_group[g]) == 1 and by_group[g][0] != 0) or len(set(by_group[g])) > 1]


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k.split('/', 1)[1]}": v for k, v in metrics.items()}


def _sample_trajectories(result: RoundResult, per_role: int) -> list[Trajectory]:
    if per_role <= 0:
        return result.proposer + result.solver
    return result.proposer[:per_role] + result.solver[:per_role]


def eval_sets(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """The fixed slices of the periodic evaluation, by report name."""
    return {dataset_label(n): load_dataset(n)[: cfg.trainer.eval_limit] for n in cfg.trainer.eval_data.split(",")}


def periodic_eval(
    engine: Engine, retriever: Any, sets: dict[str, list[dict[str, Any]]], cfg: Config, judge: Any | None
) -> dict[str, float]:
    """Greedy evaluation on each set: `eval/<metric>` (the mean over sets) and, for several sets, `eval/<set>/<metric>`."""
    t0 = time.perf_counter()
    per_set: dict[str, dict[str, float]] = {}
    for label, records in sets.items():
        preds = [p.to_dict() for p in evaluate(engine, retriever, records, cfg.rollout, cfg.search.topk)]
        per_set[label] = summarize(preds)
        if judge is not None:
            per_set[label]["judge_acc"] = judge_accuracy(judge_predictions(judge, preds))
    out = {f"eval/{k}": sum(m[k] for m in per_set.values()) / len(per_set) for k in next(iter(per_set.values()))}
    if len(per_set) > 1:
        out.update({f"eval/{label}/{k}": v for label, m in per_set.items() for k, v in m.items()})
    out["timing/eval_s"] = time.perf_counter() - t0
    return out


def update_roles(learner: Learner, result: RoundResult, cfg: Config, step: int, version: int) -> dict[str, float]:
    """Both roles' updates for one round; old log-probs always come from the weights that sampled."""
    batches: dict[str, list[Sample]] = {}
    for role, rc in (("solver", cfg.solver), ("proposer", cfg.proposer)):
        if step <= rc.warmup_steps:
            batches[role] = []
            continue
        trajectories, rewards, groups, excluded = result.of(role)
        batches[role] = role_samples(
            trajectories, rewards, groups, excluded, rc.adv_estimator, rc.norm_std, cfg.trainer.dynamic_sampling,
            version, learner, cfg.learner.kl_in_reward_coef,
        )  # fmt: skip
    solver, proposer = batches["solver"], batches["proposer"]
    if cfg.trainer.combine_update:
        return _prefixed("update", learner.update(solver + proposer))
    roles = [("solver", solver), ("proposer", proposer)]
    if cfg.trainer.update_order == "proposer_first":
        roles.reverse()
    if roles[0][1] and roles[1][1]:  # the first update changes the weights: score the second role's rollouts now
        learner.score_old(roles[1][1])
    metrics: dict[str, float] = {}
    for role, samples in roles:
        if role == "proposer" and not result.proposer:  # the supervised control has no proposer
            continue
        metrics.update(_prefixed(f"{role}_update", learner.update(samples)))
    return metrics


def train(cfg: Config, run_dir: Path, resume: bool = False) -> TrainSummary:
    t_start = time.perf_counter()
    run = RunDir(run_dir)
    if not resume:
        check_output_dir(run.root, ("config.toml",), "run")
        if run.metrics.exists():
            raise TrainError(f"{run_dir} already holds a run; resume it with --resume or choose another --run-dir")
    checkpoint = latest_checkpoint(run.checkpoints) if resume else None
    validate_for_training(cfg)
    try:
        resolve_device(cfg.model.device)
    except DeviceError as e:
        raise TrainError(str(e)) from None
    torch.manual_seed(cfg.learner.seed)
    model, tokenizer, reference = _load_models(cfg, checkpoint)
    engine = _engine(cfg, model, tokenizer, checkpoint)
    learner = Learner(model, cfg.learner, reference, planned_optimizer_steps(cfg), engine.pad_id, cfg.rollout.temperature)
    rng = random.Random(cfg.game.seed)
    start = 0
    if checkpoint is not None:
        learner_state, state = load_trainer_state(checkpoint)
        learner.load_state_dict(learner_state)
        start = state["step"]
        _cut_back(run, state)
        rng.setstate(random_state(state["game_rng"]))
    elif resume:  # killed before its first checkpoint: what it logged belongs to steps that are played again
        _cut_back(run, {"step": -1, "pool_events": 0})
    parts = build_components(cfg, str(run.pool), engine)
    run.create(cfg)  # only once everything loaded: a run that cannot start leaves no folder behind
    if checkpoint is not None:
        parts.sampler.restore(state["sampler"])
    logger = MetricsLogger(run, cfg, cfg.trainer.steps, start)
    sets = eval_sets(cfg) if cfg.trainer.eval_every or cfg.trainer.eval_before_training else {}
    metrics: dict[str, Any] = {}
    saved = checkpoint
    train_seconds = float(state.get("train_seconds", 0.0)) if checkpoint is not None else 0.0
    budget_s = cfg.trainer.max_minutes * 60
    done = start
    try:
        if cfg.trainer.eval_before_training and start == 0:
            logger.log(0, periodic_eval(engine, parts.retriever, sets, cfg, parts.judge))
        for step in range(start + 1, cfg.trainer.steps + 1):
            if budget_s and train_seconds >= budget_s:
                break
            t0 = time.perf_counter()
            version = learner.version
            result = parts.play(cfg, step, rng)
            metrics = dict(result.metrics)
            t1 = time.perf_counter()
            with engine.asleep():  # a vLLM engine on a GPU frees its memory for the update
                metrics.update(update_roles(learner, result, cfg, step, version))
            metrics["timing/update_s"] = time.perf_counter() - t1
            metrics.update(engine.sync_weights(model))  # the next rollouts come from the new weights
            train_seconds += time.perf_counter() - t0
            metrics["timing/train_s"] = train_seconds  # rounds + updates so far, what trainer.max_minutes counts
            if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0:
                metrics.update(periodic_eval(engine, parts.retriever, sets, cfg, parts.judge))
            if cfg.game.pool_clear_interval and step % cfg.game.pool_clear_interval == 0:
                metrics["pool/cleared"] = float(parts.pool.clear(cfg.game.keep_ratio, step))
            metrics["pool/size"] = float(len(parts.pool))
            metrics.update(parts.search_metrics())
            metrics["timing/step_s"] = time.perf_counter() - t0
            run.write_trajectories(step, _sample_trajectories(result, cfg.trainer.trajectories_per_step), tokenizer)
            logger.log(step, metrics)
            done = step
            last = step == cfg.trainer.steps or bool(budget_s and train_seconds >= budget_s)
            if step % cfg.trainer.save_every == 0 or last:
                state = {
                    "pool_events": parts.pool.events,
                    "sampler": parts.sampler.state(),
                    "game_rng": rng.getstate(),
                    "train_seconds": train_seconds,
                }
                saved = save_checkpoint(
                    run.checkpoints, step, model, tokenizer, learner.state_dict(), state, cfg, cfg.trainer.keep_checkpoints
                )
    finally:
        logger.close()
    return TrainSummary(run.root, done, metrics, saved, time.perf_counter() - t_start)


def _engine(cfg: Config, model: Any, tokenizer: Any, checkpoint: Path | None) -> Engine:
    """The rollout engine: the transformers loop over the learner's own model (bf16 autocast), or
    vLLM started from the same weights on disk and kept current by `sync_weights` after each update
    (model.engine = "auto": vLLM when installed; benchmarks/README.md, "Rollout engines")."""
    if cfg.model.engine == "vllm" or (cfg.model.engine == "auto" and vllm_installed()):
        weights = str(checkpoint / "model") if checkpoint else model_path(cfg.model.path, cfg)
        return VLLMEngine(weights, cfg.model.dtype, cfg.model.device, cfg.model.vllm_gpu_memory, cfg.rollout.seed)
    return TransformersEngine(
        model, tokenizer, cfg.model.threads, autocast_bf16=cfg.model.dtype == "bfloat16", keep_kv_mib=cfg.model.keep_kv_mib
    )


def _load_models(cfg: Config, checkpoint: Path | None) -> tuple[Any, Any, Any | None]:
    """(policy in fp32 from the checkpoint or the base model, tokenizer, frozen base reference if KL is on)."""
    base_model = model_path(cfg.model.path, cfg)
    model, tokenizer = load_model(str(checkpoint / "model") if checkpoint else base_model, "float32", cfg.model.device)
    reference = None
    if cfg.learner.kl_coef > 0:
        reference, _ = load_model(base_model, "float32", cfg.model.device)
        reference.requires_grad_(False)
    return model, tokenizer, reference


def _cut_back(run: RunDir, state: dict[str, Any]) -> None:
    """Drop what was written after the checkpoint: later metrics lines and later pool events."""
    step = state["step"]
    kept = [
        line
        for line in (run.metrics.read_text().splitlines() if run.metrics.exists() else [])
        if _line_step(line) is not None and _line_step(line) <= step
    ]
    atomic_write(run.metrics, "".join(line + "\n" for line in kept).encode())
    if run.pool.exists():
        QuestionPool(run.pool)  # repairs a torn last line first
        lines = run.pool.read_bytes().splitlines(keepends=True)
        atomic_write(run.pool, b"".join(lines[: state["pool_events"]]))


def _line_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
