"""The student's prompt as the tokenizer expects it: the chat template when there is one."""

from __future__ import annotations

from typing import Any


def format_prompt(tokenizer: Any, user_text: str) -> str:
    """The text the student continues; its rationale starts right after it."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
    return f"{user_text}\nAnswer: "


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of a formatted prompt, the same for sampling and for PPO: chat-formatted text
    already carries its template tokens, so only a BOS the tokenizer would add and the text
    lacks is put in front."""
    ids = list(tokenizer(prompt, add_special_tokens=False).input_ids)
    bos = tokenizer.bos_token_id
    if bos is not None and ids[:1] != [bos] and tokenizer("x").input_ids[:1] == [bos]:
        ids.insert(0, bos)
    return ids
