"""Teacher profiles: a rule judge made as fallible as an LLM teacher, at rates one can set.

An exact judge (`ares_data/judges.py`) turns a correction into the gold chain, which makes
SFT on corrections imitation of an optimal expert (issue 28). A real LLM teacher misses
errors, fixes only the first one, slips, or answers nothing usable. `FallibleJudge` wraps a
judge and, per call, draws such errors at the profile's rates:

- scores: a false step (0.0) in the second half of the rationale is missed (scored 1.0) with
  probability `miss_late`; then every score is flipped (s -> 1 - s) with probability `score_flip`;
- corrections, one outcome per call: the rationale sent back unchanged (`correction_missing`),
  an empty answer the collector refuses (`correction_invalid`), only the first wrong sentence
  fixed and the rest kept as written (`fix_first_only`), a valid correction with one step's
  result off by one (`new_slip`), else a valid correction, written in a random valid order with
  probability `other_order` (`checkable`: any order of the operations that stays >= 0);
- coverage: only a share `corrected_share` of the questions get corrections at all (drawn per
  question); the others get an empty answer, as from a teacher that corrects a budget only.

Every draw is seeded by `seed` and keyed by the request (prompt and rationale), not by a
sentence or its position: the same request always gets the same answer (retries, repairs and
every arm alike), while the same gold step in two different calls is judged independently.
Profiles: `exact` (no errors), `llm` (the rates of issue 28) and `sparse` (`llm` correcting a
quarter of the questions); `ares fake-teacher --judge arith --profile llm --score-flip 0.2` sets
one rate over a profile's.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from .checkable import parse_step
from .formatting import answer_sentence
from .judges import Problem, complete, corrected, is_answer, kept_prefix, read_problem, walk
from .rule_names import ProfileName
from .splitter import split_sentences

if TYPE_CHECKING:
    from .judges import Judge

# The correction outcomes, in the order their shares are laid out on [0, 1).
CORRECTION_KINDS = ("missing", "invalid", "fix_first_only", "new_slip")


@dataclass(frozen=True)
class Profile:
    """Rates of a fallible teacher's errors (module docstring); all 0 and full coverage: exact."""

    score_flip: float = 0.0
    miss_late: float = 0.0
    correction_missing: float = 0.0
    correction_invalid: float = 0.0
    fix_first_only: float = 0.0
    new_slip: float = 0.0
    other_order: float = 0.0
    corrected_share: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"teacher profile: {name} is a share, between 0 and 1, not {value}")
        if sum(self.correction_shares()) > 1.0:
            raise ValueError(f"teacher profile: the correction shares {', '.join(CORRECTION_KINDS)} add up to "
                             f"{sum(self.correction_shares()):.2f}, more than 1")

    @property
    def exact(self) -> bool:
        return self == Profile()

    def correction_shares(self) -> list[float]:
        return [self.correction_missing, self.correction_invalid, self.fix_first_only, self.new_slip]


LLM = Profile(score_flip=0.10, miss_late=0.25, correction_missing=0.10, correction_invalid=0.10,
              fix_first_only=0.20, new_slip=0.10, other_order=0.5)


PROFILES = {ProfileName.exact: Profile(), ProfileName.llm: LLM,
            ProfileName.sparse: replace(LLM, corrected_share=0.25)}


def make_profile(name: ProfileName | str, **rates: float | None) -> Profile:
    """The profile `name` with the rates given (not None) set over its own; ValueError when a rate
    is not a share or the correction shares add up to more than 1."""
    return replace(PROFILES[ProfileName(name)], **{k: v for k, v in rates.items() if v is not None})


def correction_kind(draw: float, profile: Profile) -> str:
    """Which correction a uniform `draw` in [0, 1) makes: one of CORRECTION_KINDS, else `valid`."""
    edge = 0.0
    for kind, share in zip(CORRECTION_KINDS, profile.correction_shares()):
        edge += share
        if draw < edge:
            return kind
    return "valid"


def _rng(seed: int, *parts: Any) -> random.Random:
    key = hashlib.sha256(json.dumps([seed, *parts]).encode()).hexdigest()
    return random.Random(key)


def fix_first_only(problem: Problem, sentences: list[str]) -> list[str]:
    """The rationale with only its first wrong sentence replaced (by the step or answer it should
    have been); everything after it kept as written."""
    verdicts = walk(problem, sentences)
    first = next((i for i, v in enumerate(verdicts) if v.score == 0.0), None)
    if first is None:
        return sentences
    value, remaining = (verdicts[first - 1].value, verdicts[first - 1].remaining) if first else (
        problem.start, problem.ops)
    if is_answer(sentences[first]) or not remaining:
        fixed = answer_sentence(problem.answer)
    else:
        fixed = complete(value, remaining)[0].sentence()
    return [*sentences[:first], fixed, *sentences[first + 1:]]


def with_slip(problem: Problem, sentences: list[str], rng: random.Random) -> list[str]:
    """The correction of `sentences` with one step's result off by one: a step the correction
    wrote itself when it wrote any, else any step."""
    out = corrected(problem, sentences)
    kept = len(kept_prefix(problem, sentences)[0])
    steps = [i for i in range(len(out)) if parse_step(out[i]) is not None]
    written = [i for i in steps if i >= kept] or steps
    if not written:
        return out
    at = rng.choice(written)
    step = parse_step(out[at])
    assert step is not None
    result = step.result + (1 if step.result == 0 or (step.result < 9 and rng.random() < 0.5) else -1)
    out[at] = replace(step, result=result).sentence()
    return out


@dataclass
class FallibleJudge:
    """`judge` with the errors of `profile`, drawn per request (module docstring)."""

    judge: "Judge"
    profile: Profile
    seed: int = 0

    def scores(self, prompt: str, sentences: list[str]) -> list[float]:
        rng = _rng(self.seed, "scores", prompt, sentences)
        out = []
        for index, score in enumerate(self.judge.scores(prompt, sentences)):
            miss, flip = rng.random(), rng.random()
            late = index >= len(sentences) / 2 and not is_answer(sentences[index])
            if score == 0.0 and late and miss < self.profile.miss_late:
                score = 1.0
            out.append(round(1.0 - score, 1) if flip < self.profile.score_flip else score)
        return out

    def correct(self, prompt: str, rationale: str) -> str:
        problem = read_problem(prompt)
        if problem is None:
            return self.judge.correct(prompt, rationale)
        if _rng(self.seed, "covered", problem.start, problem.ops).random() >= self.profile.corrected_share:
            return ""
        rng = _rng(self.seed, "correct", prompt, rationale)
        kind = correction_kind(rng.random(), self.profile)
        sentences = [s.text for s in split_sentences(rationale)]
        if kind == "missing":
            return rationale.strip()
        if kind == "invalid":
            return ""
        if kind == "fix_first_only":
            return " ".join(fix_first_only(problem, sentences))
        if kind == "new_slip":
            return " ".join(with_slip(problem, sentences, rng))
        return " ".join(corrected(problem, sentences, rng if rng.random() < self.profile.other_order else None))
