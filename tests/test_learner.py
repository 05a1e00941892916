"""The Learner on the tiny random Llama: masking, the learning signal, bf16 with fp32 masters."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from searchplay.assets.names import TINY, model_path
from searchplay.config import LearnerConfig
from searchplay.llm.transformers_engine import load_model
from searchplay.rl.learner import Learner, Sample

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def tiny(cfg):
    torch.manual_seed(0)
    return load_model(model_path(TINY), "float32")


def test_masked_positions_get_exactly_zero_gradient(tiny) -> None:
    model, _ = tiny
    learner = Learner(model, LearnerConfig(bf16=False, kl_coef=0.0), pad_id=0)
    prompt, response = [5, 6, 7, 8], [9, 10, 11, 12]
    t = learner._tensors([Sample(prompt, response, [1, 0, 1, 0], 1.0)])
    embeddings = model.get_input_embeddings()
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["emb"] = output

    handle = embeddings.register_forward_hook(keep)
    logp = learner._logprobs(learner.policy, t)
    handle.remove()
    (logp * t["mask"]).sum().backward()
    # the last response token (masked, predicts nothing) and the token after a masked target get no signal
    assert (logp[0][t["mask"][0] == 0] == 0).all()
    grad = captured["emb"].grad[0]
    assert grad[-1].abs().sum() == 0  # the final token is never a predictor of a trained target
    assert grad[:4].abs().sum() > 0


def test_a_toy_reward_raises_the_favoured_tokens_probability(tiny) -> None:
    model, _ = tiny
    before = copy.deepcopy(model.state_dict())
    learner = Learner(model, LearnerConfig(lr=1e-2, kl_coef=0.0, bf16=False, clip_high=10, clip_low=0.9), pad_id=0)
    prompt, good, bad = [1, 2, 3, 4], 42, 43

    def prob_good() -> float:
        with torch.no_grad():
            return torch.softmax(model(torch.tensor([prompt])).logits[0, -1], -1)[good].item()

    start = prob_good()
    for _ in range(5):  # rollouts of one prompt: token 42 gets reward 1, token 43 reward 0 (GRPO: +1 / -1)
        v = learner.version  # fresh rollouts of the current weights each round
        samples = [Sample(prompt, [good], [1], 1.0, version=v), Sample(prompt, [bad], [1], -1.0, version=v)]
        metrics = learner.update(samples)
    assert prob_good() > 2 * start
    assert metrics["learner/grad_norm"] > 0 and metrics["learner/tokens_per_s"] > 0
    changed = sum(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert changed > 0


def test_bf16_autocast_keeps_small_updates_in_fp32_masters(tiny) -> None:
    model, _ = tiny
    assert all(p.dtype == torch.float32 for p in model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learner = Learner(model, LearnerConfig(lr=1e-6, kl_coef=0.0, bf16=True, weight_decay=0.0), pad_id=0)
    learner.update([Sample([1, 2, 3], [42, 43], [1, 1], 1.0), Sample([1, 2, 3], [44, 45], [1, 1], -1.0)])
    deltas = [(v - before[k]).abs().max().item() for k, v in model.state_dict().items()]
    assert max(deltas) > 0  # updates of ~1e-6 land
    # the same update applied to bf16 weights would be lost: 1e-6 is far below bf16's resolution near 1e-2
    w = torch.tensor(0.02, dtype=torch.bfloat16)
    assert (w + torch.tensor(1e-6, dtype=torch.bfloat16)) == w


def test_learner_refuses_bf16_weights(cfg) -> None:
    model, _ = load_model(model_path(TINY), "bfloat16")
    with pytest.raises(ValueError, match="fp32 master weights"):
        Learner(model, LearnerConfig())


def test_kl_term_and_reference(tiny) -> None:
    model, _ = tiny
    reference = copy.deepcopy(model)
    learner = Learner(model, LearnerConfig(lr=1e-2, kl_coef=0.5, bf16=False), reference, pad_id=0)
    samples = [Sample([1, 2, 3], [42, 43], [1, 1], 1.0), Sample([1, 2, 3], [44, 45], [1, 1], -1.0)]
    first = learner.update(samples)
    assert first["learner/kl"] == pytest.approx(0.0, abs=1e-6)  # identical to the reference before the update
    for s in samples:
        s.version = learner.version  # the same sequences, as if sampled again by the updated weights
    second = learner.update(samples)
    assert second["learner/kl"] > 0
    kl = learner.token_kl(samples)
    assert [k.shape[0] for k in kl] == [2, 2] and all((k >= 0).all() for k in kl)


def gradients_at_each_step(learner: Learner, model: Any) -> list[dict[str, torch.Tensor]]:
    """The gradients each optimizer step sees (the update frees them at its end), appended as it runs."""
    seen: list[dict[str, torch.Tensor]] = []
    learner.optimizer.register_step_pre_hook(
        lambda *_: seen.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    )
    return seen


def test_micro_batching_matches_one_big_batch(cfg) -> None:
    samples = [Sample([1, 2, 3, 4][: 2 + i % 3], [40 + i, 50 + i, 60 + i], [1, 0, 1], float(i % 2) - 0.5) for i in range(6)]
    grads = []
    for budget in (10_000, 8):
        torch.manual_seed(0)
        model, _ = load_model(model_path(TINY), "float32")
        learner = Learner(model, LearnerConfig(lr=0.0, kl_coef=0.0, bf16=False, micro_batch_tokens=budget, grad_clip=0), pad_id=0)
        seen = gradients_at_each_step(learner, model)  # the accumulated gradient of the (only) mini-batch
        learner.update(samples)
        grads.append(torch.cat([g.flatten() for g in seen[-1].values()]))
    assert len(learner._index_chunks(list(range(6)), samples)) == 6  # really split into micro-batches
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-4)


def test_paper_config_update_equals_a_hand_computed_ssp_style_loss(tiny) -> None:
    from searchplay.config import load_config

    model, _ = tiny
    cfg = load_config(ROOT / "configs" / "paper-qwen2.5-7b.toml").learner
    assert (cfg.loss_agg, cfg.dual_clip, cfg.clip_low, cfg.clip_high) == ("seq-mean-token-mean", 3.0, 0.2, 0.285)
    cfg.lr, cfg.bf16, cfg.gradient_checkpointing, cfg.warmup_steps = 0.0, False, False, 0  # measure the loss, change nothing
    learner = Learner(model, cfg, copy.deepcopy(model).requires_grad_(False), pad_id=0)
    samples = [Sample([1, 2, 3], [40, 41, 42], [1, 1, 1], 1.0), Sample([4, 5], [43, 44, 45, 46], [1, 0, 1, 1], -1.0)]
    shifts = [torch.tensor([0.5, -0.5, 0.0]), torch.tensor([2.0, 0.0, -0.1, 1.5])]  # log(new / old) per response token
    expected = []
    for s, shift in zip(samples, shifts):
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            logits = model(ids).logits[0, len(s.prompt_ids) - 1 : -1].float()
        new = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.response_ids)[:, None]).squeeze(-1)
        s.old_logprobs = torch.cat([torch.zeros(len(s.prompt_ids) - 1), new - shift])
        per_token = []
        for r, m in zip(shift.exp().tolist(), s.loss_mask):
            a = s.advantage
            loss = max(-a * r, -a * min(max(r, 1 - 0.2), 1 + 0.285))
            if a < 0:
                loss = min(loss, -a * 3.0)  # dual clip bounds the loss of negative advantages
            if m:
                per_token.append(loss)
        expected.append(sum(per_token) / len(per_token))
    metrics = learner.update(samples)
    assert metrics["learner/kl"] == pytest.approx(0.0, abs=1e-7)  # identical to the reference
    assert metrics["learner/loss"] == pytest.approx(sum(expected) / len(expected), rel=1e-4)
