"""A tiny random-weight Llama with the bundled SmolLM2 tokenizer, for fast CPU tests and CI runs.

It is built from a config (no weights are downloaded), seeded, and cached under
`$SEARCHPLAY_HOME/tiny-random-llama`. Use it anywhere a model is expected with `tiny-random`.
Its outputs are random text: it exercises the plumbing, not intelligence.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from searchplay.assets import asset_file
from searchplay.config import Config, searchplay_home


def build_tiny_model(out_dir: Path, seed: int = 0, hidden: int = 64, layers: int = 2, cfg: Config | None = None) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(asset_file("smollm2-135m-instruct", cfg))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tmp = out_dir.with_name(f"{out_dir.name}.building-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished first
        if not (out_dir / "config.json").is_file():
            raise
        shutil.rmtree(tmp)
    return out_dir


def tiny_model_dir(cfg: Config | None = None) -> Path:
    path = searchplay_home(cfg) / "tiny-random-llama"
    if not (path / "config.json").is_file():
        build_tiny_model(path, cfg=cfg)
    return path
