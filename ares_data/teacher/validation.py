"""Reading teacher answers: tolerant parsing, then strict checks.

Parsing forgives what models do (code fences, text around the JSON) but never guesses: only a
JSON value of the expected shape counts, and two different ones make the answer invalid.
Validation is strict: exactly one score per sentence, each a JSON number in [0, 1] on the 0.1 grid. An answer that fails
raises `InvalidAnswer` with a short reason code (for summaries) and a one-line message
(sent back to the teacher in the repair message and kept in the store).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from ..errors import InvalidAnswer

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)




def json_values(text: str) -> list[Any]:
    """Every outermost JSON object or array in `text`, inside code fences and in the prose around them."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    for candidate in [m.group(1) for m in _FENCE.finditer(text)] + [_FENCE.sub(" ", text)]:
        at = 0
        while True:
            starts = [i for i in (candidate.find("{", at), candidate.find("[", at)) if i >= 0]
            if not starts:
                break
            start = min(starts)
            try:
                value, at = decoder.raw_decode(candidate, start)
                found.append(value)
            except json.JSONDecodeError:
                at = start + 1
    return found


def extract_json(text: str, shape: Callable[[Any], bool] = lambda value: True, what: str = "answers",
                 missing: str = "no_scores") -> Any:
    """The one JSON value in `text` that has the expected `shape`.

    A reply that is one JSON value (code fences aside) is that value. Otherwise only values of
    the expected shape count, so a bracket in prose (`Sentence [1] is right.`) is never read as
    the answer; two different ones make the answer invalid rather than a guess."""
    whole = _FENCE.sub(lambda m: m.group(1), text).strip()
    try:
        return json.loads(whole)
    except json.JSONDecodeError:
        pass
    values = json_values(text)
    if not values:
        raise InvalidAnswer("not_json", "the reply holds no JSON object")
    distinct = {json.dumps(v, sort_keys=True): v for v in values if shape(v)}
    if len(distinct) > 1:
        raise InvalidAnswer("ambiguous", f"the reply holds {len(distinct)} different {what}; give exactly one")
    if not distinct:
        raise InvalidAnswer(missing, f"the reply holds no {what} (only other JSON or brackets in prose)")
    return next(iter(distinct.values()))


def _has_scores(value: Any) -> bool:
    return isinstance(value, dict) and "scores" in value


def parse_scores(text: str, n_sentences: int, points: bool = False) -> list[float]:
    data = extract_json(text, _has_scores, '"scores" lists')
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
        data = extract_json(text, lambda v: isinstance(v, dict) and "winner" in v, "verdicts")
    except InvalidAnswer as exc:
        if exc.code == "ambiguous":
            raise
        data = {"winner": text.strip().strip('."')}
    winner = data.get("winner") if isinstance(data, dict) else None
    normalized = {"a": "A", "b": "B", "tie": "tie"}.get(str(winner).strip().lower())
    if normalized is None:
        raise InvalidAnswer("bad_winner", f'winner must be "A", "B" or "tie", got {winner!r}')
    return normalized
