"""Names that stand for embedded assets ('bundled', 'tiny-random'), turned into paths.

This is the one place such names are understood. The top layers (cli, train, eval) call it and
pass plain paths down, so llm, search and game never reach up into the asset builder.
"""

from __future__ import annotations

import copy
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from searchplay.assets import ASSETS, AssetMissingError, asset_file
from searchplay.assets.tiny import tiny_model_dir
from searchplay.config import Config, SearchConfig

BUNDLED = "bundled"
TINY = "tiny-random"


BUNDLED_MODELS = [name for name, asset in ASSETS.items() if asset.kind == "model"]


def model_path(value: str, cfg: Config | None = None) -> str:
    """'bundled' -> the exported SmolLM2; 'bundled:<name>' -> that model asset (an opt-in one such as
    qwen2.5-coder-1.5b-instruct); 'tiny-random' -> the tiny test model; anything else as given."""
    if value == BUNDLED:
        return str(asset_file("smollm2-135m-instruct", cfg))
    if value.startswith(BUNDLED + ":"):
        name = value.removeprefix(BUNDLED + ":")
        if name not in BUNDLED_MODELS:
            raise AssetMissingError(f"model {value!r}: there is no bundled model {name!r}; known: {', '.join(BUNDLED_MODELS)}")
        return str(asset_file(name, cfg))
    if value == TINY:
        return str(tiny_model_dir(cfg))
    return value


# Shapes (config.json) of models the shipped configs name, for `plan` on a machine that has not downloaded them
SHAPES = Path(__file__).resolve().parents[2] / "configs" / "shapes"


def model_config_file(value: str, cfg: Config | None = None) -> Path | None:
    """The model's config.json: a directory's, the Hugging Face cache's for a model id, or the shape file this
    checkout ships for that id (configs/shapes/<name>.json, "Qwen/Qwen2.5-7B-Instruct" -> qwen2.5-7b-instruct.json);
    None when none of them."""
    path = Path(model_path(value, cfg))
    if path.is_dir():
        return path / "config.json"
    cached = try_to_load_from_cache(value, "config.json")
    if isinstance(cached, str):
        return Path(cached)
    shipped = SHAPES / f"{path.name.lower()}.json"
    return shipped if shipped.is_file() else None


def corpus_path(value: str, cfg: Config | None = None) -> Path:
    return asset_file("wiki", cfg) if value == BUNDLED else Path(value)


def index_path(value: str, kind: str = "bm25", cfg: Config | None = None) -> str:
    """'bundled' -> the BM25 (or, for kind 'dense', the MiniLM) index over the bundled corpus."""
    if value != BUNDLED:
        return value
    return str(asset_file("wiki-bm25" if kind == "bm25" else "wiki-minilm", cfg))


def seeds_path(value: str, cfg: Config | None = None, extractive: bool = False) -> str:
    """'bundled' -> the title seeds, or for the extractive game the span seeds (each with its passage)."""
    if value != BUNDLED:
        return value
    return str(asset_file("wiki-span-seeds" if extractive else "wiki-seeds", cfg))


def resolve_search(search: SearchConfig, cfg: Config | None = None) -> SearchConfig:
    """A copy whose index names are paths; only the indexes its kind reads are resolved, so a BM25
    run does not need the dense index built."""
    s = copy.deepcopy(search)
    if not s.url and s.kind in ("bm25", "hybrid"):
        s.index = index_path(s.index, "bm25", cfg)
    if not s.url and s.kind in ("dense", "hybrid"):
        s.dense_index = index_path(s.dense_index, "dense", cfg)
    return s


def resolve_config(cfg: Config) -> Config:
    """A copy of `cfg` whose model, index and seed names are paths (the fields a run reads)."""
    out = copy.deepcopy(cfg)
    out.model.path = model_path(cfg.model.path, cfg)
    out.game.verifier_model = model_path(cfg.game.verifier_model, cfg) if cfg.game.verifier_model else ""
    out.search = resolve_search(cfg.search, cfg)
    if cfg.game.mode == "selfplay":
        out.game.seeds = seeds_path(cfg.game.seeds, cfg, cfg.game.extractive)
    return out
