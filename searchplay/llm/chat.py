"""Chat messages to prompt token ids with the model's own chat template."""

from __future__ import annotations

from typing import Any


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The template-rendered messages, ready for the assistant's turn. transformers 5 returns a
    BatchEncoding where 4.x returned the ids; both are accepted."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)
