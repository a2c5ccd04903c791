"""Probability-weighted scores (`--score-from logprobs`): the expected score under the teacher's
token distribution, G-Eval style, beside the score it sampled.

A score call asks for `logprobs: true, top_logprobs: 20` (OpenAI chat format; llama.cpp's
server speaks it too). From the reply's `choices[0].logprobs.content` (token, logprob,
top_logprobs) `score_positions` keeps, for every number of the JSON answer in document order,
the tokens that wrote it: `[offset, token, {candidate: logprob}]`, where `offset` is where the
token starts relative to the number (negative when it starts earlier, e.g. `" 0.3"` or
`"[0"`), and the token right after the number. That compact record is stored on the call
(`teacher_call.score_logprobs`), so the distributions can be recomputed, also for a later
rationale that reuses the same answer.

The rule (`distribution`). A score on the 0.1 grid is decided by its leading digit (`0` or
`1`; once it is `1` the value is 1.0) and, after `0.`, by its tenths digit; a bare `0`
followed by `,` or `]` is 0.0. Walking the sampled tokens of a number in order, each
candidate token at a position is put in place of the sampled one (the text before the
number in that token must match) and read as the start of a number:

- it decides a grid value (`1`, `1.0`, `0.3`, `0.3]`, `0,`): that value gets the candidate's
  probability times the probability of the sampled tokens before it (the path to here);
- it is `0` or `0.` with the value still open: only the sampled token may be open, its
  mass flows on to the next position; an open candidate that was not sampled is unobserved
  (its tenths digit was never scored) and is left out;
- anything else (`-0.1`, `1.1`, `0.35`, `2`, a letter) is not a valid score: left out.

The walk stops at the position where the sampled number is decided. The masses are then
renormalised over the valid candidates. So both tokenizations are handled: one token per
number (`"0.3"`: every candidate decides a value at once) and digit by digit (`"0" "." "3"`:
the leading-digit position splits 0 from 1.0, the tenths position the values 0.0-0.9). When
the sampled score is 1.0 written digit by digit, the `0` branch is unobserved and the
distribution holds only what the leading position decided: biased towards 1.0.

Calibration. So `--score-from logprobs` asks for whole points 0-10 (prompts `score_points_v1`,
`score_group_points_v1`; the schema says integers), stored as points / 10: with the tokenizers
of OpenAI's models (and Llama 3's) every value 0-10 is one token, so every candidate decides a
value at the first position and no branch is left unscored. Digit-by-digit tokenizers write 10
as `1` `0`: a sampled `1` is followed to the next position (`0`: 10, `,`: 1), but a `1` that
was only a candidate is counted as one point, so there part of its mass may belong to 10 (a
bias of at most p(`1`) x 0.9 towards lower scores). Each score stores `score_mass`, the
probability mass of the candidates that decided a valid value (before renormalising): 1.0
means the distribution saw every branch; the top-k cut-off (`top_logprobs`: 20 here),
unobserved branches and invalid candidates lower it.
"""

from __future__ import annotations

import json
import math
import re
from enum import Enum
from typing import Any, Optional

GRID = [round(i / 10, 1) for i in range(11)]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_OPEN = re.compile(r"^0\.?$")  # a number begun as `0` or `0.`: its value is still open


class Reward(str, Enum):
    """Which teacher score becomes the reward in an export: the sampled one or the expected one."""

    sampled = "sampled"
    expected = "expected"


def logprob_content(choice: dict[str, Any]) -> Optional[list[dict[str, Any]]]:
    """`choices[0].logprobs.content` of an OpenAI-format chat completion, if there is one."""
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    return content if isinstance(content, list) and content else None


def _numbers(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of every number literal of the JSON in text[start:end], strings skipped."""
    spans, i, in_string = [], start, False
    while i < end:
        char = text[i]
        if in_string:
            i += 2 if char == "\\" else 1
            in_string = in_string and char != '"'
            continue
        if char == '"':
            in_string, i = True, i + 1
            continue
        match = _NUMBER.match(text, i) if (char.isdigit() or char == "-") else None
        if match:
            spans.append(match.span())
            i = match.end()
        else:
            i += 1
    return spans


def _json_span(text: str) -> tuple[int, int] | None:
    """Where the first JSON object or array of the answer lies (as validation.extract_json finds it)."""
    decoder = json.JSONDecoder()
    for start, char in enumerate(text):
        if char in "{[":
            try:
                return start, decoder.raw_decode(text, start)[1]
            except json.JSONDecodeError:
                continue
    return None


def score_positions(text: str, content: Optional[list[dict[str, Any]]]) -> Optional[list[list[list[Any]]]]:
    """Per number of the answer's JSON, in document order, the tokens that wrote it as
    `[offset, sampled token, {candidate: logprob}]`; None when the tokens do not spell the answer."""
    if not content:
        return None
    tokens = [str(entry.get("token", "")) for entry in content]
    joined = "".join(tokens)
    span = _json_span(joined)
    if span is None or joined.strip() != text.strip():
        return None
    starts, at = [], 0
    for token in tokens:
        starts.append(at)
        at += len(token)
    positions = []
    for number_start, number_end in _numbers(joined, *span):
        covering = []
        for i, entry in enumerate(content):
            # the tokens that wrote the number, and the one right after it: whether `0`/`1` ended
            # there (`0,`) or went on (`0.3`, `10`) is decided at that position
            if (starts[i] < number_end and starts[i] + len(tokens[i]) > number_start) or starts[i] == number_end:
                candidates = {str(c["token"]): float(c["logprob"]) for c in entry.get("top_logprobs") or []}
                candidates.setdefault(tokens[i], float(entry.get("logprob", 0.0)))
                covering.append([starts[i] - number_start, tokens[i], candidates])
        positions.append(covering)
    return positions


def _read_points(candidate: str) -> tuple[str, Optional[float]]:
    """As `_read`, for whole points 0-10 (value points / 10): a bare `1` may still become 10."""
    match = re.match(r"^(\d+)(.?)", candidate)
    if not match or match.group(2) in (".", "e", "E"):
        return "invalid", None
    literal, following = match.groups()
    if literal == "1" and not following:
        return "open", None
    if literal == "10" or len(literal) == 1:
        return "decided", int(literal) / 10
    return "invalid", None


def _read(candidate: str) -> tuple[str, Optional[float]]:
    """('decided', value), ('open', None) or ('invalid', None) for the text a number starts with."""
    if _OPEN.match(candidate):
        return "open", None
    match = re.match(r"^(-?\d+(?:\.\d+)?)", candidate)
    if not match:
        return "invalid", None
    literal = match.group(1)
    if literal.startswith("1"):
        return ("decided", 1.0) if re.fullmatch(r"1(\.0?)?", literal) else ("invalid", None)
    if re.fullmatch(r"0\.\d0*", literal) or literal == "0":
        return "decided", round(float(literal), 1)
    return "invalid", None


def distribution(positions: list[list[Any]], points: bool = False) -> Optional[dict[str, float]]:
    """The normalised distribution {"0.0": p, ...} of one number over the grid (the rule above);
    None when no candidate is a valid score."""
    return _normalised(masses(positions, points))


def _normalised(mass: dict[float, float]) -> Optional[dict[str, float]]:
    total = sum(mass.values())
    return {f"{value:.1f}": p / total for value, p in sorted(mass.items())} if total > 0 else None


def masses(positions: list[list[Any]], points: bool = False) -> dict[float, float]:
    """The probability of every grid value the candidates decided, not normalised: their sum is
    the mass the distribution covers (`points`: the number was written in whole points 0-10)."""
    read = _read_points if points else _read
    mass: dict[float, float] = {}
    path, written = 1.0, ""  # probability of the sampled tokens so far; the number written so far
    for offset, sampled, candidates in positions:
        before = written if offset >= 0 else ""
        lead = max(0, -offset)  # characters of the token that come before the number
        sampled_state = None
        for token, logprob in candidates.items():
            if token[:lead] != sampled[:lead]:
                continue
            state, value = read(before + token[lead:])
            if token == sampled:
                sampled_state = state
            elif points and state == "open":  # a `1` not sampled: one point (whole-number tokens)
                state, value = "decided", 0.1
            if state == "decided" and value is not None:
                mass[value] = mass.get(value, 0.0) + path * math.exp(logprob)
        if sampled_state != "open":
            break
        path *= math.exp(candidates[sampled])
        written = before + sampled[lead:]
    else:  # the number ended open: a bare `0` is 0.0, a bare `1` in points is 0.1
        if written.rstrip(".") == "0" or (points and written == "1"):
            value = 0.0 if written.startswith("0") else 0.1
            mass[value] = mass.get(value, 0.0) + path
    return mass


def expected(dist: dict[str, float]) -> float:
    return sum(float(value) * p for value, p in dist.items())


def _paths(data: Any, prefix: tuple = ()) -> list[tuple]:
    """The JSON path of every number in `data`, in document order (json keeps key order)."""
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in _paths(value, (*prefix, key))]
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in _paths(value, (*prefix, i))]
    return [prefix] if isinstance(data, (int, float)) and not isinstance(data, bool) else []


def expectations(text: str, stored: Optional[list],
                 points: bool = False) -> dict[tuple, tuple[float, dict[str, float], float]]:
    """(expected score, distribution, mass covered) by JSON path, e.g. ("scores", 2) or ("R1", 0),
    for a stored call's answer; empty when the call holds no logprobs or they do not line up with
    its numbers. `points`: the answer is in whole points 0-10."""
    span = _json_span(text) if stored else None
    if span is None:
        return {}
    paths = _paths(json.loads(text[span[0]:span[1]]))
    if len(paths) != len(stored):
        return {}
    found = {}
    for path, positions in zip(paths, stored):
        mass = masses(positions, points)
        dist = _normalised(mass)
        if dist is not None:
            found[path] = (expected(dist), dist, min(1.0, sum(mass.values())))
    return found


def score_row(sentence_id: int, call_id: int, score: float, weighted: Optional[tuple]) -> Any:
    """The `sentence_score` row of a sampled score, with its expected value when there is one."""
    from ..tables import SentenceScore  # here: the CLI imports `Reward` and must stay light

    expected_score, dist, mass = weighted or (None, None, None)
    return SentenceScore(sentence_id=sentence_id, teacher_call_id=call_id, score=score,
                         expected_score=expected_score, score_distribution=dist, score_mass=mass)


def lookup(found: dict[tuple, Any], key: Any, i: int) -> Any:
    """The entry of score `i` of a list at `key` ({"key": [...]}, {"key": {"scores": [...]}}), or of
    a bare list when `key` is None."""
    if key is None:
        return found.get(("scores", i)) or found.get((i,))
    return found.get((key, i)) or found.get((key, "scores", i))
