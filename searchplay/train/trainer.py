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

Where the policy lives is the backend's business (train/backend.py): with trainer.backend =
"local" generation and learning share one in-memory fp32 model (the engine autocasts to bf16; with
model.engine = "vllm" the engine is vLLM, sent the learner's new weights in memory after every
update); with "ray", rollout actors play the episodes and a data-parallel group of learner actors
updates (train/ray_backend.py). The loop below is the same for both.
Resuming loads the latest checkpoint, cuts the pool log and metrics back to that step (events
written after it belonged to a step that is now played again) and continues; a run killed before
its first checkpoint starts again from step 1. The run folder is written only once the model,
retriever and seeds have loaded, so a run that cannot start leaves nothing behind.
"""

from __future__ import annotations

import functools
import importlib.util
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from searchplay.agent.trajectory import Trajectory
from searchplay.assets.names import model_config_file, model_path
from searchplay.config import Config, validate_for_training
from searchplay.eval.data import DatasetError, dataset_label, dataset_path, load_dataset
from searchplay.eval.evaluate import evaluate, judge_accuracy, judge_predictions, summarize
from searchplay.eval.reading import ReadingItem, answer_passages, read_answers, reading_summary
from searchplay.game.pool import QuestionPool
from searchplay.game.selfplay import RoundResult
from searchplay.jsonl import DamagedLineError, atomic_write, random_state, read_appended
from searchplay.llm.base import Engine
from searchplay.llm.device import DeviceError, resolve_device, resolve_numerics
from searchplay.outdir import EVAL_FILES, WRITER_LOCK, check_output_dir, single_writer
from searchplay.train.backend import Backend, LocalBackend, WorkerFailure
from searchplay.train.checkpoint import CheckpointError, latest_checkpoint, read_state, verify_checkpoint
from searchplay.train.components import build_components
from searchplay.train.logging import MetricsLogger
from searchplay.train.memory_plan import MemoryPlan, make_plan, read_shape
from searchplay.train.probes import probe
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


def _sample_trajectories(result: RoundResult, per_role: int) -> list[Trajectory]:
    if per_role <= 0:
        return result.proposer + result.solver
    return result.proposer[:per_role] + result.solver[:per_role]


def eval_sets(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """The fixed slices of the periodic evaluation, by report name."""
    return {dataset_label(n): load_dataset(n)[: cfg.trainer.eval_limit] for n in cfg.trainer.eval_data.split(",")}


def reading_sets(cfg: Config, retriever: Any) -> dict[str, list[ReadingItem]]:
    """trainer.eval_reading: per evaluation set, its first eval_limit questions that have an answer passage in the
    retriever's top 10 for the raw question (eval/reading.py); found once, read at every evaluation."""
    if not cfg.trainer.eval_reading:
        return {}
    sets = {
        dataset_label(n): answer_passages(load_dataset(n), retriever, 10, cfg.trainer.eval_limit)[0]
        for n in cfg.trainer.eval_data.split(",")
    }
    return {label: items for label, items in sets.items() if items}


def periodic_eval(
    engine: Engine,
    retriever: Any,
    sets: dict[str, list[dict[str, Any]]],
    cfg: Config,
    judge: Any | None,
    reading: dict[str, list[ReadingItem]] | None = None,
) -> dict[str, float]:
    """Greedy evaluation on each set: `eval/<metric>` (the mean over sets) and, for several sets, `eval/<set>/<metric>`;
    with `reading`, also the reading accuracy and EM given each question's answer passage."""
    t0 = time.perf_counter()
    per_set: dict[str, dict[str, float]] = {}
    guided = cfg.rollout.scaffold == "guided"
    for label, records in sets.items():
        preds = [p.to_dict() for p in evaluate(engine, retriever, records, cfg.rollout, cfg.search.topk)]
        per_set[label] = summarize(preds)
        if judge is not None:
            per_set[label]["judge_acc"] = judge_accuracy(judge_predictions(judge, preds))
        if reading and label in reading:
            read = reading_summary(read_answers(engine, reading[label], guided=guided), 0)
            per_set[label].update({"reading_accuracy": read["reading_accuracy"], "reading_em": read["em"]})
    common = set.intersection(*(set(m) for m in per_set.values()))  # a figure no set lacks (recall needs a search)
    out = {f"eval/{k}": sum(m[k] for m in per_set.values()) / len(per_set) for k in next(iter(per_set.values())) if k in common}
    if len(per_set) > 1:
        out.update({f"eval/{label}/{k}": v for label, m in per_set.items() for k, v in m.items()})
    out["timing/eval_s"] = time.perf_counter() - t0
    return out


def _datasets_read(cfg: Config) -> list[str]:
    """Every QA set a run of `cfg` will read: periodic evaluation, probes, the supervised control's training set."""
    t = cfg.trainer
    names = t.eval_data.split(",") if t.eval_every or t.eval_before_training else []
    names += [t.probe_data] if t.probe_every and t.probe_data else []
    return names + ([cfg.game.train_data] if cfg.game.mode == "supervised" else [])


def train(
    cfg: Config, run_dir: Path, resume: bool = False, say: Callable[[str], None] = print, restart: bool = False
) -> TrainSummary:
    """Train `cfg` in `run_dir` (continuing its last checkpoint with `resume`); `say` shows what `auto` settings
    became on this machine, and why (they are also written at the top of the run's config.toml). A run folder
    has one writer at a time. `restart` lets `resume` start again from step 1 when the run logged steps but
    saved no checkpoint (without it that is refused: those steps would be replaced)."""
    t_start = time.perf_counter()
    try:  # a misspelt dataset used to fail after the model loaded, and leave the run folder behind
        for name in _datasets_read(cfg):
            dataset_path(name)
    except DatasetError as e:
        raise TrainError(str(e)) from None
    run = RunDir(run_dir)
    if not resume:
        check_output_dir(run.root, ("config.toml", WRITER_LOCK), "run", EVAL_FILES)
    with single_writer(run.root, "training run"):
        if not resume and run.metrics.exists():
            raise TrainError(f"{run_dir} already holds a run; resume it with --resume or choose another --run-dir")
        checkpoint = latest_checkpoint(run.checkpoints) if resume else None
        logged = _logged_steps(run)
        if resume and checkpoint is None and logged and not restart:
            raise TrainError(
                f"{run_dir} logged steps {logged[0]}-{logged[-1]} but saved no checkpoint to continue from; start it "
                f"again from step 1 (those steps are replaced) with: searchplay train --resume {run_dir} --restart"
            )
        validate_for_training(cfg)
        try:
            cfg, notes = resolve_numerics(cfg)
            if checkpoint is not None:
                notes += verify_checkpoint(checkpoint)
                _check_pool(run, read_state(checkpoint)["pool_events"])
        except (DeviceError, CheckpointError) as e:
            raise TrainError(str(e)) from None
        for note in notes:
            say(note)
        _refuse_what_cannot_fit(cfg)
        torch.manual_seed(cfg.learner.seed)
        starting = " (vLLM starts in 20-60 s)" if cfg.model.engine == "vllm" else ""
        say(f"loading the policy and the {cfg.model.engine} rollout engine{starting}")
        try:
            backend = _open_backend(cfg, checkpoint)
        except ConnectionError as e:  # a Ray cluster that cannot be joined
            raise TrainError(str(e)) from None
        try:
            return _train(cfg, run, backend, checkpoint, resume, t_start, notes)
        except WorkerFailure as e:
            raise TrainError(f"{e}; the run stopped cleanly: continue it from its last checkpoint with --resume") from e
        finally:
            backend.close()


def _train(
    cfg: Config, run: RunDir, backend: Backend, checkpoint: Path | None, resume: bool, t_start: float, notes: list[str]
) -> TrainSummary:
    rng = random.Random(cfg.game.seed)
    start, state = 0, {}
    if checkpoint is not None:
        state = read_state(checkpoint)
        start = state["step"]
        _cut_back(run, state["step"], state["pool_events"])
        rng.setstate(random_state(state["game_rng"]))
    elif resume:  # no checkpoint yet (train checked --restart): what it logged belongs to steps played again
        _cut_back(run, -1, 0)
    engine = backend.engine
    parts = build_components(cfg, str(run.pool), engine, backend.retriever)
    run.create(cfg, notes)  # only once everything loaded: a run that cannot start leaves no folder behind
    if checkpoint is not None:
        parts.sampler.restore(state["sampler"])
    logger = MetricsLogger(run, cfg, cfg.trainer.steps, start)
    sets = eval_sets(cfg) if cfg.trainer.eval_every or cfg.trainer.eval_before_training else {}
    reading = reading_sets(cfg, parts.retriever) if sets else {}
    probes = load_dataset(cfg.trainer.probe_data) if cfg.trainer.probe_every and cfg.trainer.probe_data else []
    metrics: dict[str, Any] = {}
    saved = checkpoint
    train_seconds = float(state.get("train_seconds", 0.0))
    budget_s = cfg.trainer.max_minutes * 60
    done = start
    try:
        if cfg.trainer.eval_before_training and start == 0:
            before = periodic_eval(engine, parts.retriever, sets, cfg, parts.judge, reading)
            logger.log(0, {**before, **(probe(engine, parts.retriever, probes, cfg) if probes else {})})
        for step in range(start + 1, cfg.trainer.steps + 1):
            if budget_s and train_seconds >= budget_s:
                break
            t0 = time.perf_counter()
            version = backend.version
            result = parts.play(cfg, step, rng, functools.partial(logger.phase, step))
            metrics = dict(result.metrics)
            metrics.update(update_and_sync(backend, result, cfg, step, version, functools.partial(logger.phase, step)))
            train_seconds += time.perf_counter() - t0
            metrics["timing/train_s"] = train_seconds  # rounds + updates so far, what trainer.max_minutes counts
            if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0:
                logger.phase(step, f"evaluating on {', '.join(sets)}")
                metrics.update(periodic_eval(engine, parts.retriever, sets, cfg, parts.judge, reading))
            if probes and step % cfg.trainer.probe_every == 0:
                logger.phase(step, f"answering {len(probes)} probe questions")
                metrics.update(probe(engine, parts.retriever, probes, cfg))
            if cfg.game.pool_clear_interval and step % cfg.game.pool_clear_interval == 0:
                metrics["pool/cleared"] = float(parts.pool.clear(cfg.game.keep_ratio, step))
            metrics["pool/size"] = float(len(parts.pool))
            metrics.update(parts.search_metrics())
            metrics.update(backend.metrics())
            metrics["timing/step_s"] = time.perf_counter() - t0
            run.write_trajectories(step, _sample_trajectories(result, cfg.trainer.trajectories_per_step), engine.tokenizer)
            logger.log(step, metrics)
            done = step
            last = step == cfg.trainer.steps or bool(budget_s and train_seconds >= budget_s)
            if step % cfg.trainer.save_every == 0 or last:
                logger.phase(step, "saving a checkpoint")
                state = {
                    "pool_events": parts.pool.events,
                    "sampler": parts.sampler.state(),
                    "game_rng": rng.getstate(),
                    "train_seconds": train_seconds,
                }
                saved = backend.save(run.checkpoints, step, state, cfg)
                logger.phase(step, f"checkpoint saved ({saved.name})")
    finally:
        logger.close()
    return TrainSummary(run.root, done, metrics, saved, time.perf_counter() - t_start)


def update_and_sync(
    backend: Backend, result: RoundResult, cfg: Config, step: int, version: int, phase: Callable[[str], None]
) -> dict[str, float]:
    """The update, then the new weights to the rollout engine, which sleeps through both (on a GPU vLLM frees
    its memory for the learner and takes the weights before its KV cache comes back): sleep, update, sync, wake.
    A round that took no optimizer step (nothing learnable, a frozen role) leaves the engine's weights current:
    no sync, which on a CPU saves the 5 s a sync of the 135M model costs."""
    with backend.engine.asleep():
        t1 = time.perf_counter()
        phase("updating the policy")
        metrics = backend.update(result, cfg, step, version)
        metrics["timing/update_s"] = time.perf_counter() - t1
        if backend.version != version:
            phase("sending the new weights to the rollout engine")
            metrics.update(backend.sync_weights())  # the next rollouts come from the new weights
    return metrics


def _refuse_what_cannot_fit(cfg: Config) -> None:
    """On CUDA, before anything loads: a layout the memory plan says cannot fit is refused with the plan's
    verdict instead of an out-of-memory crash minutes later (train/memory_plan.py)."""
    device = resolve_device(cfg.model.device)
    if device.type != "cuda":
        return
    config_json = model_config_file(cfg.model.path, cfg)
    if config_json is None:
        return
    gpu_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    refuse_unfit(make_plan(cfg, read_shape(config_json), torch.cuda.device_count(), gpu_gib))


def refuse_unfit(plan: MemoryPlan) -> None:
    if not plan.fits:
        raise TrainError(f"{plan.verdict()}; the whole plan: searchplay plan --config CONFIG (docs/scaling.md)")


def _open_backend(cfg: Config, checkpoint: Path | None) -> Backend:
    """The policy's home: weights from the checkpoint when resuming, else the base model."""
    base = model_path(cfg.model.path, cfg)
    weights = str(checkpoint / "model") if checkpoint else base
    if cfg.trainer.backend == "ray":
        if importlib.util.find_spec("ray") is None:
            raise TrainError("trainer.backend = 'ray' needs Ray: pip install 'searchplay[ray]'")
        from searchplay.train.ray_backend import RayBackend  # imports Ray, the optional extra 'ray'

        return RayBackend(cfg, weights, base, checkpoint)
    return LocalBackend(cfg, weights, base, checkpoint)


def _logged_steps(run: RunDir) -> list[int]:
    """Steps in the run's metrics; a damaged line before the torn end stops with file and line (before any work)."""
    if not run.metrics.exists():
        return []
    try:
        records, _ = read_appended(run.metrics, _metrics_problem)
    except DamagedLineError as e:
        raise TrainError(
            f"{e}; {e.following} lines follow it. Repair or delete that line, then resume again (nothing was changed)"
        ) from None
    return [r["step"] for r in records]


def _metrics_problem(record: Any) -> str | None:
    ok = isinstance(record, dict) and isinstance(record.get("step"), int)
    return None if ok else "not a metrics record (an object with an integer step)"


def _check_pool(run: RunDir, pool_events: int) -> None:
    """The pool log must hold at least the events the checkpoint counted (later ones are cut back): a shorter one
    was damaged or replaced, and resuming on it would play with another pool."""
    held = run.pool.read_bytes().count(b"\n") if run.pool.exists() else 0
    if held < pool_events:
        raise CheckpointError(
            f"{run.pool} holds {held} complete events but the checkpoint to resume counted {pool_events}: the pool "
            "log was damaged or replaced; restore it, or start the run again"
        )


def _cut_back(run: RunDir, step: int, pool_events: int) -> None:
    """Drop what this run wrote after its checkpoint at `step` (-1: none yet): later metrics lines and later pool
    events, and a line torn by the kill. Only lines of steps it plays again are removed."""
    if run.metrics.exists():
        records, good = read_appended(run.metrics, _metrics_problem)
        lines = run.metrics.read_bytes()[:good].splitlines(keepends=True)
        atomic_write(run.metrics, b"".join(line for line, r in zip(lines, records, strict=True) if r["step"] <= step))
    if run.pool.exists():
        QuestionPool(run.pool)  # repairs a torn last line first
        lines = run.pool.read_bytes().splitlines(keepends=True)
        atomic_write(run.pool, b"".join(lines[:pool_events]))
