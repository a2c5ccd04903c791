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
