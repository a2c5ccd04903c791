"""Sentence splitter used by every stage (placeholder until the foundation issue lands it)."""

from __future__ import annotations

import re
from typing import NamedTuple


class Span(NamedTuple):
    text: str
    start: int
    end: int


def split_sentences(text: str) -> list[Span]:
    return [Span(m.group(0), m.start(), m.end()) for m in re.finditer(r"\S[^.!?]*[.!?]*", text)]
