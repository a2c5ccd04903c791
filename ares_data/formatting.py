"""How a question is shown to the student and the teacher, and how an answer is read back.

One place, so the rollouts, the teacher prompts, the shards and the evaluation agree.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letter(index: int) -> str:
    return LETTERS[index]


def format_choices(choices: list[str]) -> str:
    """`(A) first (B) second`, the option format of the ARES/MM-CoT prompts."""
    return " ".join(f"({letter(i)}) {c}" for i, c in enumerate(choices))


def question_context(hint: str | None, caption: str | None) -> str:
    """The text context: the hint, then the image caption when there is one."""
    parts = [p.strip() for p in (hint or "", caption or "") if p and p.strip()]
    return " ".join(parts) if parts else "N/A"


def _field(q: Any, name: str) -> Any:
    return q[name] if isinstance(q, Mapping) else getattr(q, name)


def student_prompt(q: Any) -> str:
    """The user turn the student answers: question, context, options, the answer format."""
    return (
        f"Question: {_field(q, 'question')}\n"
        f"Context: {question_context(_field(q, 'hint'), _field(q, 'caption'))}\n"
        f"Options: {format_choices(list(_field(q, 'choices')))}\n"
        "Explain your reasoning step by step in a few sentences, "
        "then finish with \"The answer is (X).\" where X is the letter of your choice."
    )


def answer_sentence(index: int) -> str:
    return f"The answer is ({letter(index)})."


_ANSWER_PATTERNS = (
    re.compile(r"answer is:?\s*\(?([A-Z])\)?(?![A-Za-z])", re.IGNORECASE),
    re.compile(r"^\s*\(([A-Z])\)\s*$", re.MULTILINE),
    re.compile(r"^\s*([A-Z])[.)]?\s*$", re.MULTILINE),
)


def parse_answer(text: str, n_choices: int) -> int | None:
    """The option index in `The answer is (X)` (the last one wins), else None."""
    for pattern in _ANSWER_PATTERNS:
        found = [m.group(1).upper() for m in pattern.finditer(text)]
        if found:
            index = LETTERS.index(found[-1])
            return index if index < n_choices else None
    return None
