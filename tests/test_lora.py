"""learner.lora_rank > 0 on the tiny model (PEFT): only the adapters learn, the reference is the base with the
adapters off, what is published and saved is the merged model, and a run resumes from its adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import Linear as LoraLinear
from safetensors.torch import load_file, save_file

from searchplay.assets.names import TINY, model_path
from searchplay.config import ConfigError, LearnerConfig, load_config
from searchplay.digest import folder_checksums
from searchplay.llm.transformers_engine import load_model
from searchplay.llm.weight_buckets import buckets
from searchplay.rl.learner import Learner
from searchplay.rl.lora import MergedWeights, add_adapters, merged_state_dict
from searchplay.train.backend import load_policy
from searchplay.train.checkpoint import CHECKSUMS
from searchplay.train.memory_plan import lora_parameters, make_plan, read_shape
from searchplay.train.trainer import train
from tests.test_ray import random_samples

ROOT = Path(__file__).resolve().parents[1]


def test_only_the_adapters_learn_and_the_merged_weights_are_the_policy() -> None:
    torch.manual_seed(0)
    base, _ = load_model(model_path(TINY), "float32")
    before = {n: t.clone() for n, t in base.state_dict().items()}
    policy = add_adapters(base, rank=4, alpha=8)
    learner = Learner(policy, LearnerConfig(lr=1e-2, bf16=False, kl_coef=0.1, lora_rank=4), None, total_steps=10)
    trained = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trained and all(".lora_" in n for n in trained)  # the base is frozen
    first = learner.update(random_samples(6))
    assert first["learner/kl"] == 0.0  # the adapters start at zero: the policy is its reference
    later = random_samples(6, seed=1)
    for sample in later:
        sample.version = learner.version  # sampled with the updated weights
    second = learner.update(later)
    assert second["learner/kl"] > 0  # the reference is the base with the adapters turned off
    merged = merged_state_dict(policy)
    assert merged.keys() == before.keys()  # the base's own names: a plain model directory
    assert max(float((merged[n] - before[n]).abs().max()) for n in before) > 1e-4  # the adapters' product moved them
    frozen = {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p
        for n, p in policy.named_parameters()
        if not p.requires_grad
    }
    assert all(torch.equal(p, before[n]) for n, p in frozen.items())  # no base weight changed
    plain, _ = load_model(model_path(TINY), "float32")
    plain.load_state_dict(MergedWeights(policy).state_dict())
    ids = torch.tensor([[5, 17, 42, 8, 99]])
    with torch.no_grad():
        assert torch.allclose(plain(ids).logits, policy(input_ids=ids).logits, atol=1e-5)


def test_a_lora_run_saves_merged_weights_and_adapters_and_resumes_from_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(ROOT / "configs/tiny-test.toml", ["trainer.steps=2", "trainer.eval_every=0", "learner.lora_rank=4"])
    assert train(cfg, run).steps == 2  # our engine generates with the LoRA policy itself
    saved = run / "checkpoints" / "step-2" / "model"
    adapter_file = saved / "adapter" / "adapter_model.safetensors"
    weights = load_file(str(saved / "model.safetensors"))
    base, _ = load_model(model_path(TINY), "float32")
    assert not any(".lora_" in n for n in weights) and set(weights) <= set(base.state_dict())  # a plain model directory
    # the random tiny model earns no reward, so its adapters stay at zero: give them a value, as training would
    adapters = load_file(str(adapter_file))
    trained = {n: torch.full_like(t, 0.01) if ".lora_B" in n else t for n, t in adapters.items()}
    save_file(trained, str(adapter_file))
    checkpoint = saved.parent  # record the new adapters as the checkpoint's own, or resume refuses them as damaged
    (checkpoint / CHECKSUMS).write_text(json.dumps(folder_checksums(checkpoint, (CHECKSUMS,))))
    cfg.trainer.steps = 3
    assert train(cfg, run, resume=True).steps == 3
    resumed = load_file(str(run / "checkpoints" / "step-3" / "model" / "model.safetensors"))
    moved = max(float((resumed[n] - base.state_dict()[n]).abs().max()) for n in resumed)
    assert moved > 1e-3  # the resumed run went on from the saved adapters, merged into what it saved


def test_the_memory_plan_counts_the_adapters_peft_makes_and_a_7b_lora_run_fits_one_gpu() -> None:
    base, _ = load_model(model_path(TINY), "float32")
    made = sum(p.numel() for p in add_adapters(base, rank=4, alpha=8).parameters() if p.requires_grad)
    assert lora_parameters(read_shape(Path(model_path(TINY))), 4) == made
    cfg = load_config(ROOT / "configs/paper-qwen2.5-7b.toml", ["trainer.backend=local", "learner.lora_rank=64"])
    one_gpu = make_plan(cfg, read_shape(ROOT / "configs/shapes/qwen2.5-7b-instruct.json"), gpus=1, gpu_gib=80)
    assert one_gpu.fits and one_gpu.loads[0].peak < 60  # full fine-tuning on one process needs 163.6 GiB
    with pytest.raises(ConfigError, match="lora_rank > 0 runs on the local backend"):
        load_config(ROOT / "configs/paper-qwen2.5-7b.toml", ["learner.lora_rank=64"])  # the shipped config is Ray


def test_a_bf16_base_halves_the_frozen_weights_and_trains_the_same_fp32_adapters() -> None:
    lora = ["learner.lora_rank=4", "learner.bf16=true"]
    cfg = load_config(ROOT / "configs/tiny-test.toml", [*lora, "learner.lora_base_dtype=bfloat16"])
    policy, _, reference = load_policy(cfg, model_path(TINY), model_path(TINY))
    assert reference is None
    assert {p.dtype for n, p in policy.named_parameters() if ".lora_" not in n} == {torch.bfloat16}  # 2 bytes a weight
    assert {p.dtype for p in policy.parameters() if p.requires_grad} == {torch.float32}  # adapters, grads, AdamW: fp32
    full = load_policy(load_config(ROOT / "configs/tiny-test.toml", lora), model_path(TINY), model_path(TINY))[0]
    full.load_state_dict({n: t.float() for n, t in policy.state_dict().items()})  # the same adapters, an fp32 base
    losses = []
    for model in (policy, full):
        learner = Learner(model, LearnerConfig(lr=1e-2, bf16=True, kl_coef=0.1, lora_rank=4), None, total_steps=10)
        losses.append(learner.update(random_samples(6))["learner/loss"])
    assert abs(losses[0] - losses[1]) <= 0.02 * max(1.0, abs(losses[1]))  # both compute in bf16 under autocast
    with pytest.raises(ConfigError, match=r"needs learner\.lora_rank > 0"):
        load_config(ROOT / "configs/tiny-test.toml", ["learner.lora_base_dtype=bfloat16"])
    shape = read_shape(ROOT / "configs/shapes/qwen2.5-7b-instruct.json")
    paper = ["trainer.backend=local", "learner.lora_rank=64"]
    fp32, bf16 = (
        make_plan(load_config(ROOT / "configs/paper-qwen2.5-7b.toml", paper + extra), shape, gpus=1, gpu_gib=80)
        for extra in ([], ["learner.lora_base_dtype=bfloat16"])
    )
    saved = fp32.loads[0].peak - bf16.loads[0].peak
    assert abs(saved - 2 * shape.parameters / 2**30) < 0.01  # the base's 4 bytes a weight became 2


def test_a_sync_merges_the_adapters_one_bucket_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paper scale v2: every merged fp32 weight was built at once for each sync (a second whole model at 7B)."""
    base, _ = load_model(model_path(TINY), "float32")
    policy = add_adapters(base, rank=4, alpha=8)
    merged: list[int] = []
    delta = LoraLinear.get_delta_weight
    monkeypatch.setattr(LoraLinear, "get_delta_weight", lambda self, name: merged.append(1) or delta(self, name))
    adapted = sum(isinstance(m, LoraLinear) for m in policy.modules())
    synced = buckets(MergedWeights(policy).state_dict().items(), torch.float32, torch.device("cpu"), 1)
    _, head = next(synced)  # the embedding alone, then one decoder layer per bucket
    second, layout = next(synced)
    assert not any(".layers." in name for name, *_ in head)
    assert 0 < len(merged) < adapted  # only the first layer's adapted weights are merged so far
    assert all(".layers.0." in name for name, *_ in layout)
    rest = list(synced)
    assert len(merged) == adapted and len(rest) >= 1  # each merged once, as its bucket was packed
    whole = merged_state_dict(policy)
    assert torch.equal(second[: whole[layout[0][0]].numel()], whole[layout[0][0]].reshape(-1))
