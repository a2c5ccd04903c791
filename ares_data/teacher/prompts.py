"""Versioned prompt templates (`prompts/<name>.md`) and the provider-neutral request they render.

A template has four sections: `system` (the instructions), `question` (what every rationale
of one question shares), `rationale` (what is specific to one call) and `repair` (the short
message that re-asks after an invalid answer). The unchanging part comes first, so provider
prompt caches hit and several rationales of one question can later share one call.
A template's version is the hash of its text, stored on every call.

Rationales are the student's (later the policy's) text: each is fenced between
`<rationale-CODE>` and `</rationale-CODE>` tags, and the instructions say that what is inside
is data. CODE is a hash of every rationale text of the request, so a text cannot know, and so
cannot close, its own fence, while an identical request still hashes the same (answers are
reused by request hash); any rationale tag inside a text is neutralised anyway (`as_data`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from string import Template
from typing import Any, Sequence

from ..errors import TeacherError
from ..formatting import format_choices, letter, question_context
from ..images import question_image

SCORE, CORRECT, JUDGE = "score_v1", "correct_v1", "judge_v1"
SCORE_POINTS = "score_points_v1"  # whole points 0-10, one token each: --score-from logprobs (logprobs.py)
_SECTION = re.compile(r"^<!-- (system|question|rationale|repair) -->\s*$", re.MULTILINE)
_TAG = re.compile(r"<(\s*/?\s*rationale)", re.IGNORECASE)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    sections: dict[str, str]

    def render(self, section: str, **values: Any) -> str:
        try:
            return Template(self.sections[section]).substitute(values).strip()
        except KeyError as exc:
            raise TeacherError(f"prompt {self.name}: section {section} needs a value for {exc}") from exc


@lru_cache(maxsize=None)
def load(name: str) -> PromptTemplate:
    try:
        text = (resources.files("ares_data.prompts") / f"{name}.md").read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TeacherError(f"no prompt template prompts/{name}.md") from exc
    parts = _SECTION.split(text)
    sections = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    missing = {"system", "question", "rationale", "repair"} - set(sections)
    if missing:
        raise TeacherError(f"prompt {name} lacks section(s) {', '.join(sorted(missing))}")
    return PromptTemplate(name, hashlib.sha256(text.encode()).hexdigest()[:16], sections)


@dataclass
class Ask:
    """One teacher request, before it is put in a provider's format.

    `parts` is the user turn: text parts and image parts (`{"type": "image", "media_type",
    "data", "sha256"}`); `turns` are earlier (answer, repair message) pairs of a repair chain.
    `max_tokens`: the answer needs at least this many (the request asks for the larger of it
    and --max-tokens).
    """

    system: str
    parts: list[dict[str, Any]]
    schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    turns: list[tuple[str, str]] = field(default_factory=list)
    max_tokens: int | None = None

    def repaired(self, answer: str, message: str, max_tokens: int | None = None) -> "Ask":
        return Ask(self.system, self.parts, self.schema, self.schema_name, [*self.turns, (answer, message)],
                   max_tokens or self.max_tokens)


def question_values(question: Any) -> dict[str, str]:
    """The fields of the `question` section, rendered the way the student saw them."""
    answer = question.answer_index
    correct = "unknown" if answer is None else f"({letter(answer)}) {question.choices[answer]}"
    return {
        "question": question.question,
        "options": format_choices(list(question.choices)),
        "context": question_context(question.hint, question.caption),
        "answer": correct,
    }


def image_part(question: Any) -> dict[str, Any] | None:
    """The question's image as a base64 part, or None when it has no readable image file."""
    image = question_image(question)
    if image is None:
        return None
    return {"type": "image", "media_type": image.media_type, "data": base64.b64encode(image.data).decode(),
            "sha256": image.sha256}


def question_parts(template: PromptTemplate, question: Any) -> list[dict[str, Any]]:
    """The shared head of a user turn: the image (when there is one), then the question block."""
    image = image_part(question)
    text = {"type": "text", "text": template.render("question", **question_values(question))}
    return [image, text] if image else [text]


def fence_code(texts: Sequence[str]) -> str:
    """The code of a request's rationale tags: a hash of all its rationale texts."""
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def as_data(text: str) -> str:
    """A rationale as shown inside its fence: anything that reads as a rationale tag, opening or
    closing, loses its `<` (becomes `‹`), so no text can end its fence or open another one."""
    return _TAG.sub(r"‹\1", text)


def numbered(sentences: Sequence[str]) -> str:
    """One sentence a line, `[i] text`, whitespace collapsed (a sentence cannot start a line)."""
    return "\n".join(f"[{i}] {' '.join(as_data(s).split())}" for i, s in enumerate(sentences, start=1))


def score_tokens(scores: int, lists: int = 1) -> int:
    """Output tokens an answer of `scores` scores in `lists` lists can take (a score is up to 3
    tokens, and whitespace): the budget grows with what is asked, so a large group is not cut."""
    return 16 + 8 * scores + 8 * lists


def score_ask(question: Any, sentences: Sequence[str], points: bool = False) -> Ask:
    """`points`: ask for whole points 0-10 (stored as points / 10) instead of 0.0-1.0."""
    template = load(SCORE_POINTS if points else SCORE)
    tail = template.render("rationale", n=len(sentences), sentences=numbered(sentences), fence=fence_code(sentences))
    return Ask(template.render("system"), [*question_parts(template, question), {"type": "text", "text": tail}],
               schema=score_schema(len(sentences), points), schema_name="sentence_scores",
               max_tokens=score_tokens(len(sentences)))


def correct_ask(question: Any, rationale: str) -> Ask:
    template = load(CORRECT)
    tail = template.render("rationale", rationale=as_data(rationale.strip()), fence=fence_code([rationale]))
    return Ask(template.render("system"), [*question_parts(template, question), {"type": "text", "text": tail}])


def judge_ask(question: Any, shown_a: str, shown_b: str) -> Ask:
    template = load(JUDGE)
    tail = template.render("rationale", rationale_a=as_data(shown_a.strip()), rationale_b=as_data(shown_b.strip()),
                           fence=fence_code([shown_a, shown_b]))
    return Ask(template.render("system"), [*question_parts(template, question), {"type": "text", "text": tail}],
               schema=JUDGE_SCHEMA, schema_name="judgement")


GRID = [round(i / 10, 1) for i in range(11)]
POINTS = list(range(11))
JUDGE_SCHEMA = {"type": "object", "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
                "required": ["winner"], "additionalProperties": False}


def score_items(points: bool = False) -> dict[str, Any]:
    """One score: a number on the 0.1 grid, or whole points 0-10."""
    return {"type": "integer", "enum": POINTS} if points else {"type": "number", "enum": GRID}


def score_schema(n: int, points: bool = False) -> dict[str, Any]:
    """Exactly `n` scores, each on the 0.1 grid (or whole points)."""
    return {"type": "object", "additionalProperties": False, "required": ["scores"],
            "properties": {"scores": {"type": "array", "minItems": n, "maxItems": n, "items": score_items(points)}}}


def repair_message(name: str, reason: str, **values: Any) -> str:
    return load(name).render("repair", reason=reason, **values)
