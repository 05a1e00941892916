"""The transformers engine on the tiny random Llama: ids, log-probs, stops, seeds."""

from __future__ import annotations

import torch

from searchplay.llm.base import SamplingParams
from searchplay.llm.transformers_engine import TransformersEngine, filter_logits


def prompts(engine: TransformersEngine) -> list[list[int]]:
    tok = engine.tokenizer
    return [tok.encode("The capital of France is"), tok.encode("Hello"), tok.encode("One two three four five six seven")]


def test_greedy_matches_transformers_generate(tiny_engine: TransformersEngine) -> None:
    ps = prompts(tiny_engine)
    out = tiny_engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=12))
    for p, g in zip(ps, out):
        ref = tiny_engine.model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False,
                                         pad_token_id=tiny_engine.pad_id)[0, len(p):].tolist()
        assert g.token_ids == ref[: len(g.token_ids)]
        assert g.finish_reason in ("length", "eos") and len(g.logprobs) == len(g.token_ids)
        assert g.text == tiny_engine.tokenizer.decode(g.token_ids)


def test_logprobs_match_a_full_forward_pass(tiny_engine: TransformersEngine) -> None:
    ps = prompts(tiny_engine)
    out = tiny_engine.generate(ps, SamplingParams(temperature=1.0, max_new_tokens=10, seed=3))
    for p, g in zip(ps, out):
        ids = torch.tensor([p + g.token_ids])
        with torch.no_grad():
            logits = tiny_engine.model(ids).logits[0, len(p) - 1 : -1].float()
        ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(g.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(ref, torch.tensor(g.logprobs), atol=1e-4)


def test_seeded_sampling_is_reproducible(tiny_engine: TransformersEngine) -> None:
    ps = prompts(tiny_engine)
    a = tiny_engine.generate(ps, SamplingParams(temperature=1.0, max_new_tokens=8, seed=7))
    b = tiny_engine.generate(ps, SamplingParams(temperature=1.0, max_new_tokens=8, seed=7))
    c = tiny_engine.generate(ps, SamplingParams(temperature=1.0, max_new_tokens=8, seed=8))
    assert [g.token_ids for g in a] == [g.token_ids for g in b]
    assert [g.token_ids for g in a] != [g.token_ids for g in c]


def test_per_sequence_stop_strings(tiny_engine: TransformersEngine) -> None:
    ps = prompts(tiny_engine)
    free = tiny_engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=16))
    # pick, for the first prompt, a piece of its own greedy continuation as stop string
    target = tiny_engine.tokenizer.decode(free[0].token_ids[:3])
    stopped = tiny_engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=16, stop=[target]))
    assert stopped[0].finish_reason == "stop" and stopped[0].stop_string == target
    assert len(stopped[0].token_ids) <= 3 and target in stopped[0].text
    assert stopped[1].token_ids == free[1].token_ids[: len(stopped[1].token_ids)]
    assert stopped[1].finish_reason != "stop" or target in stopped[1].text


def test_top_k_and_top_p_filters() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)).tolist() == [[True, False, False, True]]
    probs = torch.softmax(logits, -1)[0]  # ~[0.09, 0.64, 0.24, 0.03]
    assert probs[1] < 0.7 < probs[1] + probs[2]
    assert torch.isinf(filter_logits(logits, 0, 0.7)).tolist() == [[True, False, False, True]]
    assert not torch.isinf(filter_logits(logits, 0, 1.0)).any()
