"""Chat messages to prompt token ids with the model's own chat template, and the ids that end a turn."""

from __future__ import annotations

from typing import Any


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The template-rendered messages, ready for the assistant's turn. transformers 5 returns a
    BatchEncoding where 4.x returned the ids; both are accepted."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>")  # chat templates' end-of-turn tokens (ChatML, Llama 3, Phi)


def end_of_turn_ids(tokenizer: Any, generation_eos: int | list[int] | None) -> set[int]:
    """Token ids that end a model turn: eos, the generation config's eos, and the chat template's end marker."""
    ids = {i for i in [tokenizer.eos_token_id] if i is not None}
    ids |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos] if generation_eos is not None else [])
    for marker in END_MARKERS:
        tid = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid >= 0:
            ids.add(tid)
    return ids
