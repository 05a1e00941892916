"""The memory plan (`searchplay plan`, train/memory_plan.py) from config.json shapes alone.

Parameter counts are checked against real models (the bundled SmolLM2 and the tiny random model,
loaded here) and against Qwen2.5-7B's published count; the layouts against the figures the
trainer's layout implies. `train` consults the plan only on CUDA (not here); `refuse_unfit`, the
part it calls, is tested directly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from searchplay.assets.names import BUNDLED, model_config_file, model_path
from searchplay.config import Config, load_config
from searchplay.train.memory_plan import GIB, PlanError, activation_gib, make_plan, read_shape
from searchplay.train.trainer import TrainError, refuse_unfit

ROOT = Path(__file__).resolve().parents[1]
QWEN = ROOT / "configs" / "shapes" / "qwen2.5-7b-instruct.json"


def test_qwen_7b_has_its_published_parameter_count() -> None:
    assert read_shape(QWEN).parameters == 7_615_616_512


@pytest.mark.parametrize("name", ["bundled", "tiny-random"])
def test_parameter_count_equals_the_real_models(cfg: Config, name: str) -> None:
    config_json = model_config_file(name, cfg)
    assert config_json is not None
    model = AutoModelForCausalLM.from_pretrained(model_path(name, cfg))
    assert read_shape(config_json).parameters == sum(p.numel() for p in model.parameters())


def test_the_paper_config_fits_8_gpus_and_on_one_process_train_refuses_it() -> None:
    cfg = load_config(ROOT / "configs" / "paper-qwen2.5-7b.toml")
    shipped = make_plan(cfg, read_shape(QWEN), gpus=8, gpu_gib=80)
    assert shipped.fits and len(shipped.loads) == 8 and max(load.peak for load in shipped.loads) < 50
    cfg.trainer.backend = "local"
    plan = make_plan(cfg, read_shape(QWEN), gpus=8, gpu_gib=80)
    assert not plan.fits and len(plan.loads) == 1  # the local backend: one process on GPU 0, seven idle
    rollout = {item: gib for _, item, gib in plan.loads[0].rollout}
    assert rollout["AdamW moments (fp32)"] == pytest.approx(8 * 7_615_616_512 / GIB)
    assert "does not fit" in plan.verdict() and "AdamW moments" in plan.verdict()
    with pytest.raises(TrainError, match="does not fit: GPU 0 needs"):
        refuse_unfit(plan)


def test_a_vllm_share_too_small_for_the_weights_does_not_fit_whatever_the_totals() -> None:
    """Paper scale v2: the plan called a 14B config "fits" although vLLM's 24 GiB share cannot hold its 27.5 GiB of bf16
    weights (vLLM refuses to start then, however much of the GPU is free)."""
    cfg = load_config(ROOT / "configs" / "paper-qwen2.5-7b.toml")
    cfg.model.path = "Qwen/Qwen2.5-14B-Instruct"
    shape = read_shape(model_config_file(cfg.model.path, cfg))  # type: ignore[arg-type]  # found by the model's id
    assert shape.parameters == 14_770_033_664
    plan = make_plan(cfg, shape, gpus=8, gpu_gib=80)
    assert all(load.peak < 80 for load in plan.loads)  # the totals alone would fit
    assert not plan.fits and "cannot hold the bf16 weights (27.5 GiB)" in plan.verdict()
    cfg.model.vllm_gpu_memory = 0.4  # 32 GiB: the weights and a 12,288-token sequence's KV cache (2.25 GiB) fit
    assert make_plan(cfg, shape, gpus=8, gpu_gib=80).problems == []
    assert make_plan(load_config(ROOT / "configs" / "paper-qwen2.5-7b.toml"), read_shape(QWEN), 8, 80).problems == []


def test_ray_ranks_hold_shards_or_copies_and_colocated_pairs_share_a_gpu() -> None:
    cfg = load_config(ROOT / "configs" / "paper-qwen2.5-7b.toml")
    cfg.trainer.backend, cfg.trainer.learner_workers, cfg.trainer.rollout_workers = "ray", 8, 8
    cfg.trainer.gpus_per_worker = 0.5
    plan = make_plan(cfg, read_shape(QWEN), gpus=8, gpu_gib=80)
    assert len(plan.loads) == 8
    roles = [{role for role, *_ in load.rollout} for load in plan.loads]
    assert all(r == {"learner", "rollout"} for r in roles)  # one learner rank and one rollout worker per GPU
    update = {item: gib for _, item, gib in plan.loads[0].update}  # a group of 8 shards by default (fsdp2)
    assert update["AdamW moments (fp32) (1/8 shard)"] == pytest.approx(8 * 7_615_616_512 / GIB / 8)
    gathered = update["gathered for compute (bf16 embeddings + 2 layers)"]  # MixedPrecisionPolicy gathers in bf16
    cfg.learner.bf16 = False
    fp32 = {item: gib for _, item, gib in make_plan(cfg, read_shape(QWEN), gpus=8, gpu_gib=80).loads[0].update}
    assert fp32["gathered for compute (fp32 embeddings + 2 layers)"] == pytest.approx(2 * gathered)
    assert fp32["gathered for compute (fp32 embeddings + 2 layers)"] > fp32["fp32 weights (1/8 shard)"]
    cfg.learner.bf16, cfg.learner.offload_reference = "auto", True
    offloaded = {item: gib for _, item, gib in make_plan(cfg, read_shape(QWEN), gpus=8, gpu_gib=80).loads[0].update}
    assert update["KL reference (fp32) (1/8 shard)"] == pytest.approx(4 * 7_615_616_512 / GIB / 8)
    assert offloaded["KL reference (fp32) (offloaded: on the CPU between uses)"] == 0.0
    cfg.learner.offload_reference = False
    cfg.learner.sharding = "none"
    copies = make_plan(cfg, read_shape(QWEN), gpus=8, gpu_gib=80)
    assert not copies.fits and "AdamW moments (fp32)" in {item for _, item, _ in copies.loads[0].update}
    assert copies.loads[0].peak - plan.loads[0].peak > 50  # every rank holding 16 bytes per parameter: 7/8 of 113 GiB more
    cfg.learner.sharding, cfg.learner.offload = "fsdp2", True
    offloaded = {item: gib for _, item, gib in make_plan(cfg, read_shape(QWEN), gpus=8, gpu_gib=80).loads[0].update}
    assert offloaded["AdamW moments (fp32) (1/8 shard)"] == 0.0  # on the CPU between uses
    with pytest.raises(PlanError, match="need 16 GPUs; 8 given"):
        cfg.trainer.gpus_per_worker = 1.0
        make_plan(cfg, read_shape(QWEN), gpus=8, gpu_gib=80)


def test_the_demo_fits_a_small_gpu_and_checkpointing_saves_activations(cfg: Config) -> None:
    demo = load_config(ROOT / "configs" / "cpu-smollm2.toml")
    shape = read_shape(model_config_file("bundled", cfg))  # type: ignore[arg-type]
    assert make_plan(demo, shape, gpus=1, gpu_gib=16).fits
    assert activation_gib(shape, 8192, True) < activation_gib(shape, 8192, False)


def test_plan_command_prints_the_table_and_exits_1_only_when_it_does_not_fit() -> None:
    args = [sys.executable, "-m", "searchplay", "plan", "-c", "configs/paper-qwen2.5-7b.toml", "--shape", str(QWEN)]
    out = subprocess.run([*args, "--gpus", "8", "--gpu-mem", "80"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "7,615,616,512 parameters" in out.stdout and "fits: the fullest GPU" in out.stdout
    local = subprocess.run(
        [*args, "--gpus", "8", "--gpu-mem", "80", "--set", "trainer.backend=local"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert local.returncode == 1 and "does not fit" in local.stdout
    bare = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bare.returncode == 2 and "--gpus N and --gpu-mem" in bare.stderr  # no CUDA here
    found = subprocess.run(  # Qwen/Qwen2.5-7B-Instruct is not downloaded here: its shipped shape file is found by name
        [*args[:-2], "--gpus", "8", "--gpu-mem", "80"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert found.returncode == 0 and "7,615,616,512 parameters" in found.stdout


def test_a_file_that_is_not_a_decoder_config_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"vocab_size": 10}')
    with pytest.raises(PlanError, match=r"config\.json"):
        read_shape(bad)


@pytest.mark.parametrize(
    ("shape", "checkpointing", "measured_gib"),
    [("benchmarks/configs/qwen2.5-1.5b.json", True, 42.6), ("smollm2", False, 21.6)],
)
def test_the_update_estimate_is_within_20_percent_of_the_peaks_measured_on_an_h100(
    cfg: Config, shape: str, checkpointing: bool, measured_gib: float
) -> None:
    """benchmarks/results/gpu-h100/throughput*.md: one Learner.update of 64 x 1024 tokens in micro-batches of 16,384
    tokens, bf16 autocast, KL off, torch.cuda.max_memory_allocated (benchmarks/gpu_throughput.py)."""
    recorded = (ROOT / "benchmarks/results/gpu-h100" / ("throughput-1.5b.md" if "qwen" in shape else "throughput.md")).read_text()
    assert f"| {measured_gib} |" in recorded
    path = ROOT / shape if "qwen" in shape else Path(model_path(BUNDLED, cfg)) / "config.json"
    overrides = ["model.engine=transformers", "learner.kl_coef=0", "learner.micro_batch_tokens=16384"]
    run = load_config(
        ROOT / "configs/tiny-test.toml", [*overrides, f"learner.gradient_checkpointing={str(checkpointing).lower()}"]
    )
    planned = sum(gib for *_, gib in make_plan(run, read_shape(path), 1, 80).loads[0].update)
    assert planned == pytest.approx(measured_gib, rel=0.2)
