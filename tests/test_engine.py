"""The transformers engine on the tiny random Llama: ids, log-probs, stops, seeds."""

from __future__ import annotations

import numpy as np
import torch

from searchplay.llm.base import SamplingParams
from searchplay.llm.kv_store import KeptSequence, KVStore
from searchplay.llm.transformers_engine import TransformersEngine, filter_logits, length_groups, sample


def prompts(engine: TransformersEngine) -> list[list[int]]:
    tok = engine.tokenizer
    return [tok.encode("The capital of France is"), tok.encode("Hello"), tok.encode("One two three four five six seven")]


def test_greedy_matches_transformers_generate(tiny_engine: TransformersEngine) -> None:
    ps = prompts(tiny_engine)
    out = tiny_engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=12))
    for p, g in zip(ps, out):
        ref = tiny_engine.model.generate(torch.tensor([p]), max_new_tokens=12, do_sample=False, pad_token_id=tiny_engine.pad_id)[
            0, len(p) :
        ].tolist()
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


def test_kept_kv_gives_the_same_tokens_and_logprobs_as_a_full_prefill(tiny_engine: TransformersEngine) -> None:
    """A second turn that extends the first reuses its keys/values, including rows with nothing kept."""
    ps = prompts(tiny_engine)
    extra = tiny_engine.tokenizer.encode(" and then some more words", add_special_tokens=False)
    params = SamplingParams(temperature=0, max_new_tokens=6)
    with tiny_engine.keep_kv():
        first = tiny_engine.generate(ps, params)
        second = [p + g.token_ids + extra for p, g in zip(ps, first)] + [tiny_engine.tokenizer.encode("Unrelated")]
        before = dict(tiny_engine.stats)
        kept = tiny_engine.generate(second, params)
        reused = tiny_engine.stats["reused_tokens"] - before["reused_tokens"]
        encoded = tiny_engine.stats["prefill_tokens"] - before["prefill_tokens"]
    assert reused == sum(len(p) + len(g.token_ids) - 1 for p, g in zip(ps, first))
    assert encoded == sum(len(s) for s in second) - reused
    full = tiny_engine.generate(second, params)  # outside the block: nothing is kept any more
    assert tiny_engine.stats["reused_tokens"] == before["reused_tokens"] + reused
    for a, b in zip(kept, full):
        assert a.token_ids == b.token_ids
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)


def test_shared_prompt_prefix_is_encoded_once(tiny_engine: TransformersEngine) -> None:
    tok = tiny_engine.tokenizer
    system = tok.encode("You answer questions by searching a corpus of encyclopedia passages. " * 2)
    ps = [system + tok.encode(q, add_special_tokens=False) for q in (" Who wrote Hamlet?", " Where is Lima?", " Why?")]
    params = SamplingParams(temperature=0, max_new_tokens=5)
    before = dict(tiny_engine.stats)
    with tiny_engine.keep_kv():
        shared = tiny_engine.generate(ps, params)
    encoded = tiny_engine.stats["prefill_tokens"] - before["prefill_tokens"]
    reused = tiny_engine.stats["reused_tokens"] - before["reused_tokens"]
    assert encoded == sum(len(p) for p in ps) - 2 * len(system) and reused == 3 * len(system)
    assert [g.token_ids for g in shared] == [g.token_ids for g in tiny_engine.generate(ps, params)]


def test_kv_store_matches_longest_prefix_drops_superseded_and_stays_in_budget() -> None:
    def seq(ids: list[int]) -> KeptSequence:
        kv = torch.zeros(2, len(ids), 4)  # 2 heads x tokens x 4 dims, fp32: keys + values = 64 bytes per token
        return KeptSequence(np.array(ids), [(kv, kv.clone())])

    store = KVStore(max_bytes=64 * 10)
    store.add(seq([1, 2, 3]))
    store.add(seq([1, 2, 9, 9]))
    entry, n = store.match(np.array([1, 2, 9, 9, 5]))
    assert n == 4 and entry is store.entries[1]
    assert store.match(np.array([1, 2, 3]))[1] == 2  # the last prompt token is always encoded
    store.add(seq([1, 2, 3, 4]))  # extends [1, 2, 3], which is dropped
    assert [e.ids.tolist() for e in store.entries] == [[1, 2, 9, 9], [1, 2, 3, 4]]
    store.add(seq([7, 7, 7]))  # 4 + 4 + 3 tokens > 10: the oldest goes
    assert [e.ids.tolist() for e in store.entries] == [[1, 2, 3, 4], [7, 7, 7]] and store.nbytes == 64 * 7
    store.add(seq(list(range(11))))  # larger than the whole budget: not kept, nothing evicted
    assert store.nbytes == 64 * 7


def test_inverse_cdf_sampling_follows_the_distribution_and_never_picks_masked_tokens() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3]]).expand(20_000, -1).contiguous()
    freq = torch.bincount(sample(probs, gen), minlength=4).float() / 20_000
    assert freq[1] == 0  # probability 0 (filtered by top-k / top-p) is never sampled
    assert torch.allclose(freq, probs[0], atol=0.015)  # 3+ standard errors at n = 20,000
    assert (
        sample(probs[:5], torch.Generator().manual_seed(4)).tolist()
        == sample(probs[:5], torch.Generator().manual_seed(4)).tolist()
    )


def test_length_groups_keep_similar_lengths_together() -> None:
    assert length_groups([10, 12, 20, 25]) == [[0, 1, 2, 3]]  # short prompts: a little padding is cheaper than more passes
    assert length_groups([200, 210, 220, 480, 500]) == [[0, 1, 2], [3, 4]]
    assert length_groups([5]) == [[0]]


def test_prompts_of_very_different_lengths_give_the_same_result_as_one_at_a_time(tiny_engine: TransformersEngine) -> None:
    """Several prefill groups merged into one decode batch must not change any row."""
    tok = tiny_engine.tokenizer
    ps = [tok.encode("Hi"), tok.encode("word " * 150), tok.encode("a somewhat longer question " * 3), tok.encode("more " * 60)]
    params = SamplingParams(temperature=0, max_new_tokens=8)
    with tiny_engine.keep_kv():
        batched = tiny_engine.generate(ps, params)
    for p, b in zip(ps, batched):
        alone = tiny_engine.generate([p], params)[0]
        assert b.token_ids == alone.token_ids
        assert torch.allclose(torch.tensor(b.logprobs), torch.tensor(alone.logprobs), atol=1e-4)


def test_min_new_tokens_ignores_end_of_turn_and_stop_strings(tiny_engine: TransformersEngine) -> None:
    ps = prompts(tiny_engine)
    free = tiny_engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=16))
    stop = tiny_engine.tokenizer.decode(free[0].token_ids[:2])
    out = tiny_engine.generate(ps, SamplingParams(temperature=0, max_new_tokens=12, min_new_tokens=12, stop=[stop]))
    assert [len(g.token_ids) for g in out] == [12, 12, 12]
    assert not any(t in tiny_engine.eot_ids for g in out for t in g.token_ids)
