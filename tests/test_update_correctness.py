"""The update is the one the rollouts call for: sampled distribution, sampling weights, infrastructure failures.

All on the tiny random Llama over the real bundled BM25 index, through `run_episodes`,
`play_round`, the `Learner` and the trainer's `update_roles`.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch

from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.assets.names import BUNDLED, TINY, model_path, seeds_path
from searchplay.config import ConfigError, JudgeConfig, LearnerConfig, RolloutConfig, load_config, validate_for_training
from searchplay.game.pool import QuestionPool
from searchplay.game.prompts import solver_messages
from searchplay.game.seeds import SeedSampler, load_seeds
from searchplay.game.selfplay import play_round
from searchplay.judge.llm_judge import LLMJudge
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.rl.learner import Learner, OffPolicyError, Sample
from searchplay.train.update import role_samples, update_roles
from tests.servers import free_port
from tests.test_agent import FlakyRetriever
from tests.test_game_play import tiny_config

QUESTIONS = ["Who painted the Mona Lisa?", "What is the capital of Japan?", "Which river flows through Paris?"]


@pytest.fixture()
def engine(cfg):
    torch.manual_seed(0)
    return TransformersEngine.load(model_path(TINY), "float32", threads=1)


def solver_trajectories(engine: TransformersEngine, retriever, temperature: float = 0.7, seed: int = 3) -> list:
    prompts = [chat_prompt_ids(engine.tokenizer, *solver_messages(q)) for q in QUESTIONS for _ in range(2)]
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=8, temperature=temperature, seed=seed)
    return run_episodes(engine, retriever, prompts, cfg, "answer")


def test_learner_scores_real_trajectories_like_the_engine_at_the_rollout_temperature(engine, bundled_bm25) -> None:
    trajs = solver_trajectories(engine, bundled_bm25, temperature=0.7)
    samples = [Sample.from_trajectory(t, 1.0) for t in trajs]
    learner = Learner(engine.model, LearnerConfig(bf16=False, kl_coef=0.0, lr=0.0), pad_id=engine.pad_id, temperature=0.7)
    learner.score_old(samples)
    for s, t in zip(samples, trajs):
        start = len(t.prompt_ids) - 1
        old = s.old_logprobs[start : start + len(t.response_ids)]
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        assert mask.sum() > 0
        assert torch.allclose(old[mask], torch.tensor(t.logprobs)[mask], atol=1e-4)
    metrics = learner.update(samples)
    assert metrics["learner/logprob_gap_max"] < 1e-4 and metrics["learner/logprob_gap_mean"] < 1e-5
    # scored at temperature 1 instead, the same tokens look like another policy's: the gap check shows it
    untempered = Learner(engine.model, LearnerConfig(bf16=False, kl_coef=0.0, lr=0.0), pad_id=engine.pad_id)
    assert untempered.update([Sample.from_trajectory(t, 1.0) for t in trajs])["learner/logprob_gap_mean"] > 0.05


def test_proposer_old_logprobs_come_from_the_weights_that_sampled_it(engine, bundled_bm25, tmp_path: Path) -> None:
    cfg = tiny_config(verifier="off")
    cfg.learner = LearnerConfig(lr=1e-2, kl_coef=0.0, bf16=False, weight_decay=0.0)
    result = play_round(
        engine, bundled_bm25, SeedSampler(load_seeds(seeds_path(BUNDLED)), 0), QuestionPool(), cfg, 1, random.Random(0)
    )
    assert result.solver and result.proposer
    result.solver_rewards = [float(i % 2) for i in range(len(result.solver))]  # a signal in every solver group
    result.proposer_rewards = [float(i % 2) for i in range(len(result.proposer))]
    before = copy.deepcopy(engine.model.state_dict())
    learner = Learner(engine.model, cfg.learner, pad_id=engine.pad_id, temperature=cfg.rollout.temperature)
    metrics = update_roles(learner, result, cfg, step=1, version=learner.version)
    assert metrics["solver_update/ratio_dev"] < 1e-6  # on-policy: the first update's ratio is exactly 1
    # the proposer's rollouts were scored before the solver update moved the weights: its ratio is not forced to 1
    assert metrics["proposer_update/ratio_dev"] > 1e-3
    assert metrics["proposer_update/logprob_gap_max"] < 1e-4  # and its old log-probs are the sampling ones
    # SSP's order: the proposer first, then the solver, whose ratio is then the one not forced to 1
    engine.model.load_state_dict(before)
    cfg.trainer.update_order = "proposer_first"
    learner = Learner(engine.model, cfg.learner, pad_id=engine.pad_id, temperature=cfg.rollout.temperature)
    metrics = update_roles(learner, result, cfg, step=1, version=learner.version)
    assert metrics["proposer_update/ratio_dev"] < 1e-6 and metrics["solver_update/ratio_dev"] > 1e-3
    assert metrics["solver_update/logprob_gap_max"] < 1e-4
    # without scoring first, the learner refuses stale samples instead of silently treating them as on-policy
    stale = role_samples(result.proposer, result.proposer_rewards, result.proposer_groups, [], "grpo", True, False, version=0)
    with pytest.raises(OffPolicyError):
        learner.update(stale)


def test_each_role_is_sampled_and_scored_at_its_own_temperature(engine, bundled_bm25) -> None:
    """SSP samples the proposer at 0.8 and the solver at 1.0; each role's update scores the distribution it was
    sampled from (a learner at one temperature would see a log-prob gap > 0.05, as the test above shows)."""
    cfg = tiny_config(verifier="off")
    cfg.rollout.temperature = 0.6  # neither role's own: each must override it
    cfg.proposer.temperature, cfg.solver.temperature = 0.8, 1.0
    cfg.learner = LearnerConfig(lr=1e-2, kl_coef=0.0, bf16=False, weight_decay=0.0)
    result = play_round(
        engine, bundled_bm25, SeedSampler(load_seeds(seeds_path(BUNDLED)), 0), QuestionPool(), cfg, 1, random.Random(0)
    )
    result.solver_rewards = [float(i % 2) for i in range(len(result.solver))]
    result.proposer_rewards = [float(i % 2) for i in range(len(result.proposer))]
    at_run_temperature = Learner(engine.model, LearnerConfig(bf16=False, kl_coef=0.0), pad_id=engine.pad_id, temperature=0.6)
    for trajs in (result.proposer, result.solver):  # neither role was sampled at rollout.temperature
        samples = [Sample.from_trajectory(t, 1.0) for t in trajs]
        at_run_temperature.score_old(samples)
        gaps = [
            (s.old_logprobs[len(t.prompt_ids) - 1 :][: len(t.response_ids)] - torch.tensor(t.logprobs)).abs()[
                torch.tensor(t.loss_mask, dtype=torch.bool)
            ]
            for s, t in zip(samples, trajs)
        ]
        assert torch.cat(gaps).mean() > 0.02
    learner = Learner(engine.model, cfg.learner, pad_id=engine.pad_id, temperature=cfg.rollout.temperature)
    metrics = update_roles(learner, result, cfg, step=1, version=learner.version)
    assert metrics["solver_update/logprob_gap_max"] < 1e-4 and metrics["proposer_update/logprob_gap_max"] < 1e-4
    assert learner.temperature == 0.6  # back to the run's own after each role
    cfg.trainer.combine_update = True  # one update cannot score two temperatures
    with pytest.raises(ConfigError, match="combine_update scores both roles"):
        validate_for_training(cfg)


def test_lr_warmup_counts_optimizer_steps(engine) -> None:
    cfg = LearnerConfig(lr=1e-3, warmup_steps=8, mini_batch_size=1, ppo_epochs=2, kl_coef=0.0, bf16=False)
    learner = Learner(engine.model, cfg, pad_id=engine.pad_id)
    metrics = learner.update([Sample([1, 2, 3], [42, 43], [1, 1], 1.0), Sample([1, 2, 3], [44, 45], [1, 1], -1.0)])
    assert metrics["learner/optimizer_steps"] == 4 and learner.version == 4  # 2 mini-batches x 2 epochs
    assert metrics["learner/lr"] == pytest.approx(1e-3 * 5 / 8)  # warm-up in the same unit


def test_training_refuses_truncated_sampling() -> None:
    validate_for_training(load_config(None, ["rollout.temperature=0.7"]))
    for override in ("rollout.top_p=0.9", "rollout.top_k=20", "rollout.temperature=0"):
        with pytest.raises(ConfigError, match="rollout"):
            validate_for_training(load_config(None, [override]))


def test_retriever_failures_leave_the_loss_and_are_counted(engine, bundled_bm25) -> None:
    cfg = tiny_config(verifier="off")
    flaky = FlakyRetriever(bundled_bm25, fail_from=3, only_first=True)  # 2 proposer search turns pass; one solver query fails
    result = play_round(engine, flaky, SeedSampler(load_seeds(seeds_path(BUNDLED)), 0), QuestionPool(), cfg, 1, random.Random(0))
    failed = [t.stop_reason == "error" for t in result.solver]
    assert any(failed) and not all(failed)
    assert result.solver_excluded == failed
    assert result.metrics["solver/infra_excluded"] == sum(failed)
    samples = role_samples(
        result.solver, result.solver_rewards, result.solver_groups, result.solver_excluded, "grpo", True, False, version=0
    )
    assert len(samples) == len(result.solver) - sum(failed)
    kept_ids = {id(s.response_ids) for s in samples}
    assert all(id(t.response_ids) not in kept_ids for t, f in zip(result.solver, failed) if f)


def test_an_unreachable_judge_excludes_answers_instead_of_scoring_them_zero(engine, bundled_bm25, tmp_path: Path) -> None:
    cfg = tiny_config(verifier="off", solver_reward="judge")
    cfg.judge = JudgeConfig(
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        model="nobody",
        retries=0,
        timeout_s=2,
        cache=str(tmp_path / "cache.sqlite"),
    )
    result = play_round(
        engine,
        bundled_bm25,
        SeedSampler(load_seeds(seeds_path(BUNDLED)), 0),
        QuestionPool(),
        cfg,
        1,
        random.Random(0),
        LLMJudge(cfg.judge),
    )
    judged = ["judge" in t.meta for t in result.solver]
    assert any(judged)
    assert [x for x, j in zip(result.solver_excluded, judged) if j] == [True] * sum(judged)
    assert result.metrics["solver/judge_unknown"] == sum(judged) == result.metrics["solver/infra_excluded"]


def test_an_end_of_turn_token_never_stays_inside_an_episode(engine, bundled_bm25) -> None:
    model = copy.deepcopy(engine.model)  # a model that ends every turn at once with <|im_end|>
    eot = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    head.bias.data.zero_()
    head.bias.data[eot] = 100.0
    model.lm_head = head
    eager = TransformersEngine(model, engine.tokenizer)
    trajs = solver_trajectories(eager, bundled_bm25, temperature=1.0)
    for t in trajs:
        assert t.response_ids.count(eot) == 1 and t.response_ids[-1] == eot  # only where the episode really ends
        assert t.loss_mask[-1] == 1 and sum(t.loss_mask) == 1
        assert [turn.finish_reason for turn in t.turns] == ["eos"] * len(t.turns)


def test_a_frozen_proposer_is_untouched_by_its_role_and_role_scales_apply(engine, bundled_bm25) -> None:
    """proposer.train = false: only the solver's update moves the weights; update_every and lr_scale act per role."""
    cfg = tiny_config(verifier="off")
    cfg.learner = LearnerConfig(lr=1e-2, kl_coef=0.0, bf16=False, weight_decay=0.0)
    result = play_round(
        engine, bundled_bm25, SeedSampler(load_seeds(seeds_path(BUNDLED)), 0), QuestionPool(), cfg, 1, random.Random(0)
    )
    result.solver_rewards = [0.0] * len(result.solver)  # no solver signal: any change comes from the proposer
    result.proposer_rewards = [float(i % 2) for i in range(len(result.proposer))]
    before = copy.deepcopy(engine.model.state_dict())

    def changed() -> bool:
        return any(not torch.equal(before[k], v) for k, v in engine.model.state_dict().items())

    cfg.proposer.train = False
    learner = Learner(engine.model, cfg.learner, pad_id=engine.pad_id, temperature=cfg.rollout.temperature)
    metrics = update_roles(learner, result, cfg, step=1, version=learner.version)
    assert not changed() and "proposer_update/samples" in metrics and metrics["proposer_update/samples"] == 0
    cfg.proposer.train, cfg.proposer.update_every = True, 2
    assert update_roles(learner, result, cfg, step=1, version=learner.version)["proposer_update/samples"] == 0
    assert not changed()
    cfg.proposer.lr_scale = 0.5
    metrics = update_roles(learner, result, cfg, step=2, version=learner.version)
    assert changed() and metrics["proposer_update/lr"] == pytest.approx(0.5e-2)
