"""Reading teacher answers: tolerant parsing, then strict checks.

Parsing forgives what models do (code fences, text around the JSON); validation does not:
exactly one score per sentence, each in [0, 1] and on the 0.1 grid. An answer that fails
raises `InvalidAnswer` with a short reason code (for summaries) and a one-line message
(sent back to the teacher in the repair message and kept in the store).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import InvalidAnswer

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)




def extract_json(text: str) -> Any:
    """The first JSON value in `text`, looking inside code fences and past surrounding prose."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        for start, char in enumerate(candidate):
            if char in "{[":
                try:
                    return decoder.raw_decode(candidate, start)[0]
                except json.JSONDecodeError:
                    continue
    raise InvalidAnswer("not_json", "the reply holds no JSON object")


def parse_scores(text: str, n_sentences: int, points: bool = False) -> list[float]:
    data = extract_json(text)
    return check_scores(data.get("scores") if isinstance(data, dict) else data, n_sentences, points)


def check_scores(scores: Any, n_sentences: int, points: bool = False) -> list[float]:
    """One rationale's score list, checked: exactly `n_sentences` numbers on the 0.1 grid in [0, 1]
    (`points`: whole numbers 0-10, returned as points / 10)."""
    if not isinstance(scores, list):
        raise InvalidAnswer("no_scores", 'the JSON has no "scores" list')
    if len(scores) != n_sentences:
        raise InvalidAnswer("wrong_count", f"expected {n_sentences} scores, got {len(scores)}")
    if points:
        return [_check_points(value, i) for i, value in enumerate(scores, start=1)]
    checked = []
    for i, value in enumerate(scores, start=1):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidAnswer("not_number", f"score {i} is not a number: {value!r}")
        if not 0.0 <= value <= 1.0:
            raise InvalidAnswer("out_of_range", f"score {i} is {value}, outside 0.0-1.0")
        if abs(value * 10 - round(value * 10)) > 1e-6:
            raise InvalidAnswer("off_grid", f"score {i} is {value}, not a multiple of 0.1")
        checked.append(round(float(value), 1))
    return checked


def _check_points(value: Any, i: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10:
        raise InvalidAnswer("not_points", f"score {i} is {value!r}, not a whole number from 0 to 10")
    return value / 10


def parse_correction(text: str, original: str, prompt_texts: list[str]) -> str:
    """The corrected rationale; empty answers and answers that echo the prompt are refused."""
    corrected = _FENCE.sub(lambda m: m.group(1), text).strip()
    if not corrected:
        raise InvalidAnswer("empty", "the corrected rationale is empty")
    normalized = " ".join(corrected.split())
    for prompt_text in prompt_texts:
        block = " ".join(prompt_text.split())
        if block and block != " ".join(original.split()) and block in normalized:
            raise InvalidAnswer("echo", "the reply repeats the prompt instead of correcting the rationale")
    return corrected


def parse_judgement(text: str) -> str:
    try:
        data = extract_json(text)
    except InvalidAnswer:
        data = {"winner": text.strip().strip('."')}
    winner = data.get("winner") if isinstance(data, dict) else None
    normalized = {"a": "A", "b": "B", "tie": "tie"}.get(str(winner).strip().lower())
    if normalized is None:
        raise InvalidAnswer("bad_winner", f'winner must be "A", "B" or "tie", got {winner!r}')
    return normalized
