import dataclasses
import re
from pathlib import Path

import pytest

from searchplay.config import Config, ConfigError, load_config, parse_override, to_toml, validate_for_training


def test_defaults_and_toml_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[search]\ntopk = 5\nkind = "hybrid"\n[server]\nport = 9001\n')
    cfg = load_config(f)
    assert (cfg.search.topk, cfg.search.kind, cfg.server.port) == (5, "hybrid", 9001)
    assert cfg.search.index == Config().search.index


def test_overrides_win_over_file_and_parse_types(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[search]\ntopk = 5\n")
    cfg = load_config(f, ["search.topk=7", "search.timeout_s=2", "search.index=/data/my index", "model.dtype=float32"])
    assert cfg.search.topk == 7
    assert cfg.search.timeout_s == 2.0 and isinstance(cfg.search.timeout_s, float)
    assert cfg.search.index == "/data/my index"
    assert cfg.model.dtype == "float32"


def test_unknown_key_names_key_and_valid_keys() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, ["search.top_k=3"])
    msg = str(e.value)
    assert "'search.top_k'" in msg and "topk" in msg and "timeout_s" in msg


def test_unknown_section() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'serch'.*valid keys: assets, search"):
        load_config(None, ["serch.topk=3"])


def test_wrong_type_names_field_value_and_type(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[search]\ntopk = "three"\n')
    with pytest.raises(ConfigError, match=r"search\.topk: value 'three' is not of the expected type int"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"search\.kind: value 'sparse'.*'bm25' \| 'dense' \| 'hybrid'"):
        load_config(None, ["search.kind=sparse"])
    with pytest.raises(ConfigError, match=r"search\.retries: value True"):
        load_config(None, ["search.retries=true"])


def test_section_given_a_scalar(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("search = 3\n")
    with pytest.raises(ConfigError, match="search: expected a table"):
        load_config(f)


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[search\ntopk = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML"):
        load_config(f)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_cross_field_validation() -> None:
    with pytest.raises(ConfigError, match="seed_hops_min/max"):
        load_config(None, ["assets.seed_hops_min=4", "assets.seed_hops_max=2"])
    with pytest.raises(ConfigError, match=re.escape("search.topk: value 0 is out of range [1, 1000]")):
        load_config(None, ["search.topk=0"])
    with pytest.raises(ConfigError, match=re.escape("game.reward_left/right")):
        load_config(None, ["game.reward_left=0.8", "game.reward_right=0.2"])


def test_override_syntax() -> None:
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a.b=hello world") == (["a", "b"], "hello world")
    with pytest.raises(ConfigError, match=re.escape("section.field=value")):
        parse_override("nonsense")


def test_to_toml_round_trips_with_help_comments(tmp_path: Path) -> None:
    cfg = load_config(None, ["search.topk=4"])
    text = to_toml(cfg)
    assert "# documents returned per search" in text
    f = tmp_path / "resolved.toml"
    f.write_text(text)
    assert load_config(f) == cfg


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.toml")))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.toml")
    validate_for_training(cfg)  # every shipped config trains as it is
    assert cfg.trainer.steps >= 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.clip_low=1.5", "learner.clip_low: value 1.5 is out of range [0, 0.999]"),
        ("learner.ppo_epochs=0", "learner.ppo_epochs: value 0 is out of range [1, 100]"),
        ("learner.mini_batch_size=-1", "learner.mini_batch_size: value -1"),
        ("trainer.save_every=0", "trainer.save_every: value 0"),
        ("trainer.steps=-5", "trainer.steps: value -5"),
        ("game.keep_ratio=1.5", "game.keep_ratio: value 1.5"),
        ("rollout.top_p=0", "rollout.top_p: value 0"),
    ],
)
def test_numeric_fields_have_ranges_checked_before_any_work(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_every_numeric_field_declares_a_range_shown_by_config_show() -> None:
    cfg = Config()
    for sec in dataclasses.fields(cfg):
        for f in dataclasses.fields(getattr(cfg, sec.name)):
            if isinstance(getattr(getattr(cfg, sec.name), f.name), (int, float)) and not isinstance(
                getattr(getattr(cfg, sec.name), f.name), bool
            ):
                assert f.metadata["range"] != (None, None), f"{sec.name}.{f.name} has no range"
    assert "# PPO clip range below 1 (paper: 0.2) [range 0 .. 0.999]" in to_toml(cfg)


def test_training_checks_values_changed_after_loading() -> None:
    cfg = load_config(None, ["rollout.temperature=0.7"])
    cfg.trainer.steps = -5  # what `searchplay train --steps -5` does
    with pytest.raises(ConfigError, match=re.escape("trainer.steps")):
        validate_for_training(cfg)


def test_paper_config_matches_ssp() -> None:
    """The rows docs/method.md marks "same" (or "same in effect") for the paper config."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper-qwen2.5-7b.toml")
    g, lr, r, t = cfg.game, cfg.learner, cfg.rollout, cfg.trainer
    assert (g.batch_size, g.proposer_n, g.solver_n) == (256, 1, 5)
    assert (lr.mini_batch_size, lr.ppo_epochs) == (128 * 5, 1)
    assert (lr.lr, lr.warmup_steps) == (1e-6, 1 + 2 + 1 + 2 + 1)
    assert (lr.kl_coef, lr.kl_estimator, lr.entropy_coef) == (0.01, "low_var_kl", 0.0)
    assert (lr.clip_low, lr.clip_high, lr.dual_clip, lr.loss_agg) == (0.2, 0.285, 3.0, "seq-mean-token-mean")
    assert t.update_order == "proposer_first" and not t.combine_update and not t.dynamic_sampling
    assert (g.verifier, g.noisy_docs, g.solver_reward, g.proposer_reward, g.format_penalty) == ("judge", 4, "judge", "1-acc", 0.0)
    assert (g.failure_handling, g.reuse_with_replacement, g.reuse_threshold) == ("reuse", True, 1.0)
    assert (g.pool_clear_interval, g.keep_ratio) == (10, 0.0)
    assert (r.on_no_action, r.on_search_error, r.scaffold, r.temperature) == ("end", "show", "free", 1.0)
    assert (r.max_turns, g.solver_max_turns, g.proposer_max_turns, r.max_total_tokens) == (10, 10, 10, 4096 + 8192)
    assert (cfg.proposer.temperature, cfg.solver.temperature, r.max_new_tokens) == (0.8, 1.0, 8192)
    assert (t.eval_before_training, t.eval_every) == (True, 5) and g.seeds.endswith(".jsonl") and g.seeds != "bundled"
