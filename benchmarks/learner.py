"""Learner benchmark: update throughput and peak memory, ours vs TRL's GRPOTrainer, same model and batch.

Run: .venv/bin/python benchmarks/learner.py [--model bundled] [--batch 8]
TRL is installed only for this benchmark: .venv/bin/pip install trl datasets "transformers==<installed>".

How the comparison is made. A fixed batch of real trajectories is produced once (the bundled
SmolLM2 solving NQ questions over the bundled BM25 index, guided scaffold, 3 turns) and saved.
Each method then runs in its own process (so peak RSS is its own): load the fp32 model and a
frozen reference, and perform `--updates` timed updates (after one warm-up) on that batch with
GRPO-style advantages, PPO clipping 0.2/0.285, KL coef 0.01 (k3), token-mean aggregation, bf16
autocast. For TRL, the trainer cannot take a fixed batch, so we construct a `GRPOTrainer`
(loss_type "dapo" = token-mean, beta 0.01, epsilon 0.2/0.285) and drive its own loss path
directly: reference log-probs with its `_get_per_token_logps_and_entropies`, then
`compute_loss` + backward + its optimizer step. Retrieved-document tokens are masked in both
(TRL's `tool_mask`). Trained tokens/s = model-written tokens per second of update.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.assets import asset_file
from searchplay.assets.names import model_path
from searchplay.config import LearnerConfig, RolloutConfig
from searchplay.game.prompts import solver_messages
from searchplay.jsonl import read_jsonl
from searchplay.llm.transformers_engine import TransformersEngine, load_model
from searchplay.rl.advantages import grpo
from searchplay.rl.learner import Learner, Sample, enable_checkpointing
from searchplay.search.bm25 import Bm25Retriever

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mib, print_table


def make_batch(model: str, n: int, path: Path) -> None:
    engine = TransformersEngine.load(model, "bfloat16", threads=0)
    questions = [r["question"] for r in read_jsonl(asset_file("nq-answerable"))[:n]]
    prompts = [chat_prompt_ids(engine.tokenizer, *solver_messages(q)) for q in questions]
    trajs = run_episodes(
        engine,
        Bm25Retriever(asset_file("wiki-bm25")),
        prompts,
        RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=32, seed=0),
        "answer",
        3,
    )
    rewards = [float(i % 2) for i in range(n)]  # a fixed, balanced reward pattern: half right, half wrong
    path.write_text(
        json.dumps(
            [
                {"prompt_ids": t.prompt_ids, "response_ids": t.response_ids, "loss_mask": t.loss_mask, "reward": r}
                for t, r in zip(trajs, rewards)
            ]
        )
    )


def run_ours(model: str, batch: list[dict], updates: int, checkpointing: bool) -> dict:
    policy, tok = load_model(model, "float32")
    ref = copy.deepcopy(policy).requires_grad_(False)
    cfg = LearnerConfig(lr=1e-6, kl_coef=0.01, bf16=True, gradient_checkpointing=checkpointing, micro_batch_tokens=16384)
    learner = Learner(policy, cfg, ref, pad_id=tok.pad_token_id)
    adv = grpo([b["reward"] for b in batch], [i // 2 for i in range(len(batch))])
    samples = [Sample(b["prompt_ids"], b["response_ids"], b["loss_mask"], a) for b, a in zip(batch, adv)]
    learner.update(samples)  # warm-up
    t0 = time.perf_counter()
    for _ in range(updates):
        for s in samples:  # the same batch, as if sampled again by the current weights (one on-policy update)
            s.version = learner.version
        learner.update(samples)
    seconds = (time.perf_counter() - t0) / updates
    return {"seconds_per_update": seconds, "trained_tokens": sum(sum(b["loss_mask"]) for b in batch)}


def run_trl(model: str, batch: list[dict], updates: int, checkpointing: bool) -> dict:
    # TRL is not a dependency of searchplay: installed only to run this comparison.
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    policy, tok = load_model(model, "float32")
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(),
        use_cpu=True,
        bf16=True,
        per_device_train_batch_size=len(batch),
        num_generations=2,
        beta=0.01,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.285,
        learning_rate=1e-6,
        gradient_checkpointing=checkpointing,
        report_to="none",
        max_completion_length=4096,
        logging_steps=1,
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "x"}] * len(batch)),
        processing_class=tok,
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=updates + 1)
    trainer.current_gradient_accumulation_steps = 1  # set by its training loop, which we do not run
    if checkpointing:  # HF turns it on inside Trainer.train(), which we do not run: the same call our Learner makes
        enable_checkpointing(trainer.model)
    pad = tok.pad_token_id
    width_p = max(len(b["prompt_ids"]) for b in batch)
    width_c = max(len(b["response_ids"]) for b in batch)
    prompt_ids = torch.full((len(batch), width_p), pad)
    prompt_mask = torch.zeros_like(prompt_ids)
    completion_ids = torch.full((len(batch), width_c), pad)
    completion_mask = torch.zeros_like(completion_ids)
    tool_mask = torch.zeros_like(completion_ids)
    for i, b in enumerate(batch):
        prompt_ids[i, width_p - len(b["prompt_ids"]) :] = torch.tensor(b["prompt_ids"])  # TRL left-pads prompts
        prompt_mask[i, width_p - len(b["prompt_ids"]) :] = 1
        completion_ids[i, : len(b["response_ids"])] = torch.tensor(b["response_ids"])
        completion_mask[i, : len(b["response_ids"])] = 1
        tool_mask[i, : len(b["response_ids"])] = torch.tensor(b["loss_mask"])
    adv = torch.tensor(grpo([b["reward"] for b in batch], [i // 2 for i in range(len(batch))]), dtype=torch.float32)
    model = trainer.model
    ref = trainer.ref_model if trainer.ref_model is not None else None

    def update() -> None:
        inputs = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "tool_mask": tool_mask,
            "advantages": adv,
            "num_items_in_batch": tool_mask.sum(),
        }
        with torch.no_grad(), trainer.accelerator.autocast():
            ids = torch.cat([prompt_ids, completion_ids], 1)
            attention = torch.cat([prompt_mask, completion_mask], 1)
            ref_model = ref if ref is not None else model
            inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(
                ref_model, ids, attention, width_c, batch_size=len(batch)
            )[0]
        model.train()
        with trainer.accelerator.autocast():
            loss = trainer.compute_loss(model, inputs)
        trainer.accelerator.backward(loss)
        trainer.accelerator.clip_grad_norm_(model.parameters(), 1.0)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        trainer.optimizer.zero_grad()

    update()  # warm-up
    t0 = time.perf_counter()
    for _ in range(updates):
        update()
    seconds = (time.perf_counter() - t0) / updates
    return {"seconds_per_update": seconds, "trained_tokens": int(tool_mask.sum()), "ref_model": ref is not None}


def child(method: str, model: str, batch_file: str, updates: int, checkpointing: bool, threads: int) -> None:
    torch.set_num_threads(threads)
    batch = json.loads(Path(batch_file).read_text())
    fn = run_ours if method == "ours" else run_trl
    result = fn(model, batch, updates, checkpointing)
    result["peak_rss_MiB"] = peak_rss_mib()
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--updates", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", nargs=4, metavar=("METHOD", "MODEL", "BATCH_FILE", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, model, batch_file, ckpt = args.child
        child(method, model, batch_file, args.updates, ckpt == "1", args.threads)
        return
    with tempfile.TemporaryDirectory() as tmp:
        batch_file = Path(tmp) / "batch.json"
        model = model_path(args.model)
        make_batch(model, args.batch, batch_file)
        batch = json.loads(batch_file.read_text())
        total = sum(len(b["prompt_ids"]) + len(b["response_ids"]) for b in batch)
        trained = sum(sum(b["loss_mask"]) for b in batch)
        print(f"batch: {len(batch)} trajectories, {total:,} tokens, {trained:,} model-written (trained)", file=sys.stderr)
        rows = []
        for ckpt in ("0", "1"):
            results = {}
            for method in ("ours", "trl"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--updates",
                        str(args.updates),
                        "--threads",
                        str(args.threads),
                        "--child",
                        method,
                        model,
                        str(batch_file),
                        ckpt,
                    ],
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    continue
                results[method] = json.loads(out.stdout.strip().splitlines()[-1])
            for method, r in results.items():
                rows.append(
                    {
                        "learner": "searchplay" if method == "ours" else "TRL GRPOTrainer",
                        "grad. checkpointing": ckpt == "1",
                        "s / update": r["seconds_per_update"],
                        "trained tok/s": r["trained_tokens"] / r["seconds_per_update"],
                        "all tok/s": total / r["seconds_per_update"],
                        "peak RSS MiB": r["peak_rss_MiB"],
                    }
                )
            if len(results) == 2:
                rows.append(
                    {
                        "learner": "ratio searchplay / TRL",
                        "grad. checkpointing": ckpt == "1",
                        "s / update": results["ours"]["seconds_per_update"] / results["trl"]["seconds_per_update"],
                        "trained tok/s": results["trl"]["seconds_per_update"] / results["ours"]["seconds_per_update"],
                        "all tok/s": "",
                        "peak RSS MiB": results["ours"]["peak_rss_MiB"] / results["trl"]["peak_rss_MiB"],
                    }
                )
    print_table(f"Learner update, {args.model}, bf16 autocast, batch of {len(batch)} real trajectories ({total:,} tokens)", rows)


if __name__ == "__main__":
    main()
