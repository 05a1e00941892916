"""One round of search self-play, in the order of docs/method.md §1.

    seeds -> proposer rollouts -> extraction + filters -> verification
          -> failure handling (reuse | dummy) -> solver rollouts -> rewards -> pool update

`play_round` returns both roles' trajectories with rewards and GRPO group ids (proposer: the
seed's index, solver: the question's index), ready for the learner, plus namespaced metrics.
It performs no weight update; the trainer does that with what it returns.

Infrastructure failures are not the model's: a rollout whose search failed, a solver answer the
judge could not decide, a proposer whose question the judge could not verify, and a proposer
whose solvers all failed that way are marked `excluded` (they leave the loss and are counted),
and success rates are computed over the solver rollouts that did not fail.

`play_supervised_round` is the supervised control: labelled questions go straight to the solver,
with the same rollouts and rewards, and there is no proposer.
"""

from __future__ import annotations

import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from searchplay.agent.protocol import count_tags
from searchplay.agent.rollout import chat_prompt_ids, rollout_metrics, run_episodes
from searchplay.agent.trajectory import Trajectory
from searchplay.config import Config, GameConfig, RolloutConfig
from searchplay.game.extract import REJECTION_REASONS, VERIFY_ERROR, VERIFY_FAILED, answered_seed, extract_question
from searchplay.game.pool import PoolQuestion, QuestionPool
from searchplay.game.prompts import proposer_messages, seed_examples, solver_messages
from searchplay.game.rewards import proposer_reward, solver_reward, success_rate, usable_answer
from searchplay.game.seeds import Seed, SeedSampler, seed_passage
from searchplay.game.verify import verify_questions
from searchplay.judge.llm_judge import LLMJudge
from searchplay.judge.match import exact_match, f1
from searchplay.llm.base import Engine
from searchplay.search.base import Retriever


@dataclass
class SolverTask:
    question: str
    golden: list[str]
    source: str  # "new" (verified this round), "reuse" (from the pool) or "labelled" (supervised mode)
    pool_id: str
    proposer_index: int | None = None  # which proposer rollout produced it (new questions)


@dataclass
class RoundResult:
    proposer: list[Trajectory]
    proposer_rewards: list[float]
    proposer_groups: list[int]
    solver: list[Trajectory]
    solver_rewards: list[float]
    solver_groups: list[int]
    tasks: list[SolverTask]
    metrics: dict[str, float] = field(default_factory=dict)
    proposer_excluded: list[bool] = field(default_factory=list)  # infrastructure failures: not trained on
    solver_excluded: list[bool] = field(default_factory=list)

    def of(self, role: str) -> tuple[list[Trajectory], list[float], list[int], list[bool]]:
        """One role's rollouts, rewards, group ids and infrastructure failures."""
        if role == "solver":
            return self.solver, self.solver_rewards, self.solver_groups, self.solver_excluded
        return self.proposer, self.proposer_rewards, self.proposer_groups, self.proposer_excluded


@dataclass
class Solved:
    """The solver side of a round: `solver_n` rollouts per task, rewards, and per-task success rates."""

    trajectories: list[Trajectory]
    rewards: list[float]
    groups: list[int]
    excluded: list[bool]
    task_rewards: list[list[float]]  # per task, the rewards of its rollouts that did not fail
    verdicts: list[bool | None]

    @property
    def rates(self) -> list[float | None]:
        """Per task, the success rate over the rollouts that did not fail; None when all failed."""
        return [success_rate(r) if r else None for r in self.task_rewards]


def quiet(text: str) -> None:
    """The `phase` of a caller that shows no progress."""


def _proposer_prompt(seed: Seed, g: GameConfig) -> tuple[str, str]:
    """The proposer's (system, user) for a seed; the extractive game shows the seed's passage (and with
    proposer_span = own, not the seed's answer: the proposer chooses one)."""
    if not g.extractive:
        return proposer_messages(seed.answer, seed.hops, seed_examples(seed.extra))
    own_words = g.own_span_words if g.proposer_span == "own" else 0
    return proposer_messages(seed.answer, seed.hops, seed_examples(seed.extra), *seed_passage(seed), own_words)


def _solver_phase(tasks: list[SolverTask], cfg: Config) -> str:
    return (
        f"solver rollouts ({len(tasks)} questions x {cfg.game.solver_n} = {len(tasks) * cfg.game.solver_n} episodes, "
        f"up to {cfg.game.solver_max_turns} turns)"
    )


def play_round(
    engine: Engine,
    retriever: Retriever,
    sampler: SeedSampler,
    pool: QuestionPool,
    cfg: Config,
    step: int,
    rng: random.Random,
    judge: LLMJudge | None = None,
    phase: Callable[[str], None] = quiet,
    referee: Engine | None = None,
) -> RoundResult:
    """One self-play round. `referee`: the frozen model of game.verifier_model, which verifies instead of
    the policy (`engine`) when given."""
    g, metrics, timing = cfg.game, {}, {}
    guided = cfg.rollout.scaffold == "guided"

    # 1-2. seeds and proposer rollouts (proposer_n per seed; the group is the seed)
    t0 = time.perf_counter()
    seeds = [replace(s, hops=min(s.hops, g.max_hops)) if g.max_hops else s for s in sampler.sample(g.batch_size)]
    proposer_seeds = [s for s in seeds for _ in range(g.proposer_n)]
    proposer_groups = [i for i in range(len(seeds)) for _ in range(g.proposer_n)]
    prompts = [chat_prompt_ids(engine.tokenizer, *_proposer_prompt(s, g)) for s in proposer_seeds]
    given = g.proposer_span == "given"
    metas: list[dict[str, Any]] = [
        {"role": "proposer", "id": f"step{step}-p{i}", "answer": s.answer if given else None, "hops": s.hops}
        for i, s in enumerate(proposer_seeds)
    ]
    phase(f"proposer rollouts ({len(prompts)} episodes, up to {g.proposer_max_turns} turns)")
    proposer = run_episodes(
        engine,
        retriever,
        prompts,
        _role(cfg.rollout, g.proposer_max_turns, step, 0, cfg.proposer.temperature),
        "question",
        cfg.search.topk,
        metas,
    )
    proposer_excluded = [t.search_errors > 0 for t in proposer]
    timing["timing/proposer_s"] = time.perf_counter() - t0

    # 3. extraction and rule filters
    extractions = [extract_question(t, s, g) for t, s in zip(proposer, proposer_seeds)]
    answered = [answered_seed(s, e) for s, e in zip(proposer_seeds, extractions)]  # with the proposer's own span
    for t, e in zip(proposer, extractions):  # logged with the trajectory: what was asked, and why it was dropped
        t.meta["question"], t.meta["rejection"] = e.question, e.rejection
        if not given:
            t.meta["answer"] = e.answer
    rejections = Counter(e.rejection for e in extractions if e.rejection)
    candidates = [i for i, e in enumerate(extractions) if e.rejection is None]

    # 4. verification
    t0 = time.perf_counter()
    verified: dict[int, Any] = {}
    if candidates and g.verifier != "off":
        phase(f"verifying {len(candidates)} questions ({g.verifier})")
        checks = verify_questions(
            [(extractions[i].question or "", answered[i], proposer[i]) for i in candidates],
            proposer,
            g.verifier,
            g.noisy_docs,
            rng,
            engine=referee or engine,
            judge=judge,
            guided=guided,
            retriever=retriever,
            topk=cfg.search.topk,
            max_words=g.max_answer_words,
        )
        titles = {h["id"]: h["title"] for t in proposer for h in t.retrieved}
        for i, v in zip(candidates, checks):
            proposer[i].meta["verification"] = {
                "passed": v.passed, "answer": v.answer, "verdict": v.verdict,
                "evidence_ids": v.evidence_ids, "noisy_ids": v.noisy_ids,  # the verifier's input documents
                "noisy_titles": [titles.get(d, "") for d in v.noisy_ids],  # their text is in other proposers' hits
            }  # fmt: skip
            proposer_excluded[i] = proposer_excluded[i] or v.infra
            if v.passed:
                verified[i] = v
            else:
                reason = VERIFY_ERROR if v.verdict in ("verifier_error", "judge_unknown") else VERIFY_FAILED
                rejections[reason] += 1
                proposer[i].meta["rejection"] = reason
    elif candidates:
        verified = dict.fromkeys(candidates)
    timing["timing/verify_s"] = time.perf_counter() - t0

    # 5. solver tasks: the verified questions, plus pool questions in the slots of rejected rollouts
    tasks = [SolverTask(extractions[i].question or "", answered[i].golden, "new", metas[i]["id"], i) for i in verified]
    n_rejected = len(proposer) - len(verified)
    if g.failure_handling == "reuse" and n_rejected:
        for q in pool.sample_reusable(n_rejected, g.reuse_threshold, rng, g.reuse_with_replacement):
            tasks.append(SolverTask(q.question, [q.answer, *q.aliases], "reuse", q.id))

    # 6-7. solver rollouts and rewards; the proposer's reward from its question's success rate
    t0 = time.perf_counter()
    phase(_solver_phase(tasks, cfg))
    solved = solve(engine, retriever, tasks, cfg, step, judge)
    timing["timing/solver_s"] = time.perf_counter() - t0
    proposer_rewards = [g.format_penalty] * len(proposer)
    rates = solved.rates
    for task, rate in zip(tasks, rates):
        if task.proposer_index is None:
            continue
        if rate is None:  # every solver rollout failed for infrastructure reasons: no verdict on the question
            proposer_excluded[task.proposer_index] = True
        else:
            proposer_rewards[task.proposer_index] = proposer_reward(
                rate, g.proposer_reward, g.reward_left, g.reward_right, g.solver_n, g.validity_reward
            )
    for t, r in zip(proposer, proposer_rewards):
        t.meta["reward"] = r

    # 8. pool update: new questions with provenance, new attempts of reused ones
    for k, (task, rate) in enumerate(zip(tasks, rates)):
        if rate is None:
            continue
        rewards = solved.task_rewards[k]
        if task.source == "reuse":
            pool.record_attempt(task.pool_id, step, rewards, rate)
            continue
        author = task.proposer_index
        assert author is not None, "a new question always names the proposer rollout that wrote it"
        seed, v = answered[author], verified[author]
        pool.add(
            PoolQuestion(
                id=task.pool_id,
                question=task.question,
                answer=seed.answer,
                aliases=list(seed.aliases),
                hops=seed.hops,
                step=step,
                proposer_trajectory=metas[author]["id"],
                evidence_ids=v.evidence_ids if v else [],
                noisy_ids=v.noisy_ids if v else [],
                verifier_answer=v.answer if v else None,
                verdict=v.verdict if v else "not_verified",
                solver_rewards=rewards,
                success_rate=rate,
                seed_extra=seed.extra,
            )
        )

    metrics.update(_proposer_metrics(proposer, proposer_rewards, proposer_excluded, rejections, len(candidates), len(verified)))
    metrics.update(_solver_metrics(solved, tasks, judge))
    new_rates = [r for task, r in zip(tasks, rates) if task.source == "new" and r is not None]
    # questions the solver's group can learn from: some rollouts succeed, some fail
    metrics["proposer/learnable_fraction"] = sum(0 < r < 1 for r in new_rates) / len(new_rates) if new_rates else 0.0
    metrics.update(timing)
    if g.verifier == "off":  # nothing was verified: a pass rate would be a made-up 1.0
        metrics.pop("verify/pass_rate")
    return RoundResult(
        proposer,
        proposer_rewards,
        proposer_groups,
        solved.trajectories,
        solved.rewards,
        solved.groups,
        tasks,
        metrics,
        proposer_excluded,
        solved.excluded,
    )


def play_supervised_round(
    engine: Engine,
    retriever: Retriever,
    sampler: SeedSampler,
    cfg: Config,
    step: int,
    judge: LLMJudge | None = None,
    phase: Callable[[str], None] = quiet,
) -> RoundResult:
    """The supervised control: `batch_size` labelled questions (seeds whose extra holds the question), solver only."""
    tasks = [
        SolverTask(s.extra["question"], s.golden, "labelled", str(s.extra.get("id", "")))
        for s in sampler.sample(cfg.game.batch_size)
    ]
    t0 = time.perf_counter()
    phase(_solver_phase(tasks, cfg))
    solved = solve(engine, retriever, tasks, cfg, step, judge)
    metrics = {**_solver_metrics(solved, tasks, judge), "timing/solver_s": time.perf_counter() - t0}
    return RoundResult([], [], [], solved.trajectories, solved.rewards, solved.groups, tasks, metrics, [], solved.excluded)


def solve(
    engine: Engine, retriever: Retriever, tasks: list[SolverTask], cfg: Config, step: int, judge: LLMJudge | None = None
) -> Solved:
    """`solver_n` rollouts per task (the group is the task) and their rewards."""
    g = cfg.game
    solver_tasks = [t for t in tasks for _ in range(g.solver_n)]
    groups = [k for k in range(len(tasks)) for _ in range(g.solver_n)]
    prompts = [chat_prompt_ids(engine.tokenizer, *solver_messages(t.question)) for t in solver_tasks]
    metas = [
        {
            "role": "solver",
            "id": f"step{step}-s{j}",
            "question": t.question,
            "golden": t.golden,
            "source": t.source,
            "pool_id": t.pool_id,
        }
        for j, t in enumerate(solver_tasks)
    ]
    trajs = run_episodes(
        engine,
        retriever,
        prompts,
        _role(cfg.rollout, g.solver_max_turns, step, 1, cfg.solver.temperature),
        "answer",
        cfg.search.topk,
        metas,
    )
    use_judge = judge if g.solver_reward == "judge" else None
    verdicts = _judge_solver_answers(trajs, solver_tasks, use_judge)
    rewards = [
        solver_reward(
            usable_answer(t.final, g.reject_cut_off and t.final_cut_off, g.max_answer_words),
            task.golden,
            g.solver_reward,
            count_tags("".join(x.text for x in t.turns), "answer"),
            v,
            [h.get("text", "") for h in t.retrieved],
        )
        for t, task, v in zip(trajs, solver_tasks, verdicts)
    ]
    excluded = [
        t.search_errors > 0 or (use_judge is not None and "judge" in t.meta and v is None) for t, v in zip(trajs, verdicts)
    ]
    for t, r, x in zip(trajs, rewards, excluded):
        t.meta["reward"] = r
        t.meta["excluded"] = x
    task_rewards: list[list[float]] = [[] for _ in tasks]
    for k, r, x in zip(groups, rewards, excluded):
        if not x:
            task_rewards[k].append(r)
    return Solved(trajs, rewards, groups, excluded, task_rewards, verdicts)


def _role(base: RolloutConfig, max_turns: int, step: int, role: int, temperature: float = 0.0) -> RolloutConfig:
    """The rollout settings of one role: its own turn budget, its own temperature (0: rollout.temperature) and a
    seed distinct per step and role."""
    return replace(
        base, max_turns=max_turns, seed=base.seed + 1000 * step + 100 * role, temperature=temperature or base.temperature
    )


def _judge_solver_answers(solver: list[Trajectory], tasks: list[SolverTask], judge: LLMJudge | None) -> list[bool | None]:
    """Judge verdicts for answers that are not exact matches (None: no judge, or unknown)."""
    verdicts: list[bool | None] = [None] * len(solver)
    if judge is None:
        return verdicts
    pending = [j for j, (t, task) in enumerate(zip(solver, tasks)) if t.final and not exact_match(t.final, task.golden)]
    results = judge.map(judge.equivalent, [(tasks[j].question, tasks[j].golden, solver[j].final) for j in pending])
    for j, v in zip(pending, results):
        verdicts[j] = v.value
        solver[j].meta["judge"] = {"verdict": v.value, "model": v.model}
    return verdicts


def _proposer_metrics(
    proposer: list[Trajectory],
    rewards: list[float],
    excluded: list[bool],
    rejections: Counter,
    n_candidates: int,
    n_verified: int,
) -> dict[str, float]:
    n_prop = max(len(proposer), 1)
    m: dict[str, float] = {
        "proposer/valid_rate": n_verified / n_prop,
        "proposer/reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "proposer/reward_std": statistics.pstdev(rewards) if len(rewards) > 1 else 0.0,
        "proposer/infra_excluded": float(sum(excluded)),
        "verify/candidates": float(n_candidates),
        "verify/pass_rate": n_verified / n_candidates if n_candidates else 0.0,
        "verify/errors": float(rejections.get(VERIFY_ERROR, 0)),
    }
    for reason in REJECTION_REASONS:
        m[f"proposer/reject_{reason}"] = float(rejections.get(reason, 0))
    m.update(rollout_metrics(proposer, "proposer"))
    return m


def answer_form_metrics(solved: Solved, tasks: list[SolverTask]) -> dict[str, float]:
    """What the answers look like, whatever the reward: median words, the share the model closed itself
    (not cut by the token cap), and exact match and token F1 against the task's answers."""
    answered = [(t, tasks[k].golden) for t, k in zip(solved.trajectories, solved.groups) if t.final is not None]
    if not answered:
        return {"solver/answer_words": 0.0, "solver/closed_rate": 0.0, "solver/em": 0.0, "solver/f1": 0.0}
    n = len(solved.trajectories)
    return {
        "solver/answer_words": float(statistics.median(len(t.final.split()) for t, _ in answered if t.final is not None)),
        "solver/closed_rate": sum(not t.final_cut_off for t, _ in answered) / n,
        "solver/em": sum(exact_match(t.final or "", g) for t, g in answered) / n,
        "solver/f1": sum(f1(t.final or "", g) for t, g in answered) / n,
    }


def _solver_metrics(solved: Solved, tasks: list[SolverTask], judge: LLMJudge | None) -> dict[str, float]:
    rewards, rates = solved.rewards, [r for r in solved.rates if r is not None]
    m: dict[str, float] = {
        "pool/reused": float(sum(t.source == "reuse" for t in tasks)),
        "solver/questions": float(len(tasks)),
        "solver/acc": sum(r >= 1 for r in rewards) / len(rewards) if rewards else 0.0,  # full credit
        "solver/reward_mean": statistics.fmean(rewards) if rewards else 0.0,
        "solver/infra_excluded": float(sum(solved.excluded)),
        "solver/success_rate_0": sum(r == 0 for r in rates) / max(len(rates), 1),
        "solver/success_rate_mid": sum(0 < r < 1 for r in rates) / max(len(rates), 1),
        "solver/success_rate_1": sum(r == 1 for r in rates) / max(len(rates), 1),
    }
    m.update(rollout_metrics(solved.trajectories, "solver"))
    m.update(answer_form_metrics(solved, tasks))
    if judge is not None:
        m.update({k: float(v) for k, v in judge.stats().items()})
        m["solver/judge_unknown"] = float(
            sum(1 for t, v in zip(solved.trajectories, solved.verdicts) if "judge" in t.meta and v is None)
        )
    return m
