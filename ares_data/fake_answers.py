"""What the fake teacher answers: deterministic scores, corrections and judgements for the
project's prompts, and OpenAI-format token logprobs with a known distribution at every score.

Kept apart from the server (`fake_teacher.py`) so the answers can be read and tested without
starlette: a sentence's score comes from the hash of its text, or from a rule judge
(`ares_data/judges.py`) when one is given.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .judges import Judge


FAULTS = ("500", "timeout", "malformed", "truncated", "wrong_count")
REASONING_TOKENS = 64  # what a fake reasoning model "thinks" before each answer
_NUMBERED = re.compile(r"^\[(\d+)\] (.*)$", re.MULTILINE)
_LABEL = re.compile(r"^Rationale (R\d+),", re.MULTILINE)
_FENCED = re.compile(r"^<rationale-\w+[^>\n]*>\n(.*?)\n</rationale-\w+>$", re.MULTILINE | re.DOTALL)


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def sentence_score(sentence: str) -> float:
    """The fake's score of one sentence: a hash of its text on the 0.1 grid."""
    return (_digest(sentence) % 11) / 10


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content or [] if isinstance(p, dict))


def answer(messages: list[dict[str, Any]], fault: str | None = None, model: str = "",
           judge: "Judge | None" = None) -> str:
    """The reply to a conversation built from the project's prompts (scored and corrected by
    `judge` when one is given)."""
    system = next((_text(m["content"]) for m in messages if m.get("role") == "system"), "")
    first_user = next((_text(m["content"]) for m in messages if m.get("role") == "user"), "")
    points = "whole number of points" in system
    if "numbered sentence" in system and _LABEL.search(first_user):
        return _grouped_answer(first_user, fault, points, judge)
    if "numbered sentence" in system:
        sentences = [s for _, s in _NUMBERED.findall(first_user)]
        scores = [_in_points(s, points) for s in _scores(first_user, sentences, judge)]
        if fault == "wrong_count":
            scores.append(0.5)
        reply = json.dumps({"scores": scores})
        return reply[: len(reply) // 2] if fault == "malformed" else reply
    if "Rationale A:" in first_user:
        winner = "A" if model == "judge-first" else ("A", "B", "tie")[_digest(first_user) % 3]
        return "{\"winner\": " if fault == "malformed" else json.dumps({"winner": winner})
    if "Rationale to correct:" in first_user:
        tail = first_user.split("Rationale to correct:", 1)[1]
        fenced = _FENCED.search(tail)
        rationale = " ".join((fenced.group(1) if fenced else tail).split())
        if judge:
            corrected = judge.correct(first_user, rationale)
        else:
            corrected = rationale[:1].upper() + rationale[1:]
            corrected = corrected if corrected.endswith((".", "!", "?")) else corrected + "."
        return "" if fault in ("malformed", "wrong_count") else corrected
    return "I am a fake teacher."


def _in_points(score: float, points: bool) -> float | int:
    return round(score * 10) if points else score


def _scores(prompt: str, sentences: list[str], judge: "Judge | None") -> list[float]:
    """The judge's scores of a rationale's sentences, else each sentence's hash score."""
    return judge.scores(prompt, sentences) if judge else [sentence_score(s) for s in sentences]


def _grouped_answer(user: str, fault: str | None, points: bool = False, judge: "Judge | None" = None) -> str:
    """{"R1": [...], ...} for a grouped scoring prompt; a wrong_count fault spoils the last list only."""
    pieces = _LABEL.split(user)[1:]
    lists = {label: [_in_points(s, points) for s in _scores(user, [s for _, s in _NUMBERED.findall(block)], judge)]
             for label, block in zip(pieces[::2], pieces[1::2])}
    if fault == "wrong_count":
        lists[list(lists)[-1]].append(0.5)
    reply = json.dumps(lists)
    return reply[: len(reply) // 2] if fault == "malformed" else reply


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|\s+|.')
# A score token's candidates: the sampled value, one step up, one step down (off the grid at the ends).
NEIGHBOURS = ((0.0, 0.6), (0.1, 0.3), (-0.1, 0.1))


def token_logprobs(text: str, top: int) -> list[dict[str, Any]]:
    """OpenAI-format `logprobs.content` for a reply, each number one token: a score `v` was
    sampled with p 0.6 beside `v+0.1` (0.3) and `v-0.1` (0.1), whole points alike one point up and
    down; every other token is certain."""
    content = []
    for token in _TOKEN.findall(text):
        if re.fullmatch(r"-?\d+", token):
            candidates = [(str(int(token) + round(step * 10)), math.log(p)) for step, p in NEIGHBOURS]
        elif re.fullmatch(r"-?\d+\.\d+", token):
            value = float(token)
            candidates = [(f"{value + step:.1f}", math.log(p)) for step, p in NEIGHBOURS]
        else:
            candidates = [(token, 0.0)]
        content.append({"token": token, "logprob": candidates[0][1], "bytes": list(token.encode()),
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                         for t, lp in candidates[:top]]})
    return content
