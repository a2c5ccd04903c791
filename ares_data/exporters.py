"""Shards: what the training backend reads, written as parquet with a manifest and an `export` row.

    export_rl    one row per scored rollout: prompt, response, sentence spans, sentence scores
    export_sft   prompt + teacher-corrected rationale ending in the answer sentence
    export_prm   sentence scores as process supervision (TRL stepwise, Math-Shepherd)

Each export records its row count, the rows it left out by reason, the sha256 of the
parquet file, the store queries it ran and the code version, so a checkpoint can be traced
back to the exact data it saw. `datasets` is imported inside functions (no torch here).
verl's dataset and launch script are written by `verl_export.py` through `write_shard`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import column, table
from sqlmodel import select

from .enums import HELD_OUT_SPLITS, CallKind, CallStatus, RationaleSource
from .errors import ExportError
from .formatting import answer_sentence, parse_answer, student_prompt
from .paths import default_shard_dir
from .prm_data import LabelledRationale, labelled_rationales
from .review.labels import flagged_questions, human_corrections, human_scores
from .review.policy import PRMFormat, ScorePolicy
from .splitter import split_sentences
from .store import Store
from .tables import Correction, Export, Question, Rationale, Sentence, SentenceScore, TeacherCall, utcnow
from .teacher.logprobs import Reward

# db/migrations/0009: the rationales each call was about, single and grouped calls alike.
CALL_RATIONALE = table("v_call_rationale", column("teacher_call_id"), column("rationale_id"))
PARQUET = "data.parquet"
MANIFEST = "manifest.json"
FAILED_STATUSES = (CallStatus.failed, CallStatus.error, CallStatus.invalid)


@dataclass
class ScoredRollout:
    rationale: Rationale
    question: Question
    sentences: list[Sentence]
    teacher_call_id: Optional[int]  # the chosen teacher's call; None for `mean`
    teacher_model: Optional[str]  # the chosen teacher, or the averaged ones joined by '+'
    scores: list[float]
    sources: list[str]  # per sentence: 'human', a teacher model, or 'mean'


def code_version() -> str:
    """The package version, plus the git commit when the code runs from a checkout."""
    try:
        version = importlib.metadata.version("ares-toolkit")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{version}+g{commit}" if commit else version


def query_text(store: Store, stmt: Any) -> str:
    return str(stmt.compile(dialect=store.engine.dialect, compile_kwargs={"literal_binds": True}))


def _gave_scores(call: dict) -> bool:
    """An `ok` call, or one whose valid part scored this rationale (a partly invalid grouped
    answer: its lists that passed are stored as valid scores and not asked again)."""
    return call["status"] == CallStatus.ok or bool(call["scores"])


def _skip_reason(per_call: dict[int, dict], pool: dict, full: dict, sentences: list[Sentence]) -> str | None:
    """Why a rollout without complete human scores cannot be exported, if it cannot."""
    if not per_call:
        return "unscored"
    if not any(_gave_scores(c) for c in per_call.values()):
        return "scoring_failed" if any(c["status"] in FAILED_STATUSES for c in per_call.values()) else "unscored"
    if not pool:
        return "other_teacher"
    if not sentences or not full:
        return "score_count_mismatch"
    return None


def _one_teacher(round: int, teachers: list[str], teacher: str | None) -> str | None:
    if teacher is None and len(teachers) > 1:
        raise ExportError(f"round {round} was scored by several teachers ({', '.join(teachers)}); "
                          "choose one with --teacher MODEL, or --scores mean")
    return teacher or (teachers[0] if teachers else None)


def scored_rollouts(
    store: Store, round: int, teacher: str | None = None, policy: ScorePolicy | str = ScorePolicy.human_first,
    reward: Reward | str = Reward.sampled,
) -> tuple[list[ScoredRollout], Counter, list[str]]:
    """(rollouts of the round with a reward for every sentence under `policy`, the others counted
    by reason, the queries run). Each teacher counts with its latest call that scored the rollout; several teachers
    must be chosen between (`teacher`) unless the policy is `mean`. Flagged questions are left out.
    `reward` expected: a teacher's expected score (--score-from logprobs) replaces its sampled one."""
    policy, expected = ScorePolicy(policy), Reward(reward) is Reward.expected
    of_round = (Rationale.source == RationaleSource.student, Rationale.round == round)
    rollouts_q = (select(Rationale, Question).join(Question, Question.id == Rationale.question_id)
                  .where(*of_round).order_by(Rationale.id))
    sentences_q = (select(Sentence).join(Rationale, Rationale.id == Sentence.rationale_id)
                   .where(*of_round).order_by(Sentence.rationale_id, Sentence.idx))
    scores_q = (select(CALL_RATIONALE.c.rationale_id, TeacherCall.id, TeacherCall.model, TeacherCall.status,
                       Sentence.idx, SentenceScore.score, SentenceScore.expected_score)
                .join(CALL_RATIONALE, CALL_RATIONALE.c.teacher_call_id == TeacherCall.id)
                .join(Rationale, Rationale.id == CALL_RATIONALE.c.rationale_id)
                .outerjoin(SentenceScore, SentenceScore.teacher_call_id == TeacherCall.id)
                .outerjoin(Sentence, (Sentence.id == SentenceScore.sentence_id)
                           & (Sentence.rationale_id == CALL_RATIONALE.c.rationale_id))
                .where(TeacherCall.kind == CallKind.score, *of_round).order_by(TeacherCall.id, Sentence.idx))
    with store.session() as session:
        rollouts = session.exec(rollouts_q).all()
        sentences: dict[int, list[Sentence]] = defaultdict(list)
        for sentence in session.exec(sentences_q):
            sentences[sentence.rationale_id].append(sentence)
        calls: dict[int, dict[int, dict]] = defaultdict(dict)
        for rationale_id, call_id, model, status, idx, score, weighted in session.exec(scores_q):
            call = calls[rationale_id].setdefault(call_id, {"model": model, "status": status, "scores": {}})
            if idx is not None:
                value = weighted if expected else score
                call["scores"][idx] = None if value is None else float(value)
        human = human_scores(session) if policy is ScorePolicy.human_first else {}
        flagged = flagged_questions(session)
    teachers = sorted({c["model"] for per in calls.values() for c in per.values() if _gave_scores(c)})
    if policy is not ScorePolicy.mean:
        teacher = _one_teacher(round, teachers, teacher)
    kept: list[ScoredRollout] = []
    skipped: Counter[str] = Counter()
    for rationale, question in rollouts:
        own, per_call = sentences.get(rationale.id, []), calls.get(rationale.id, {})
        latest = {c["model"]: (cid, c["scores"]) for cid, c in sorted(per_call.items()) if _gave_scores(c)}
        pool = latest if policy is ScorePolicy.mean else {m: v for m, v in latest.items() if m == teacher}
        complete = {m: v for m, v in pool.items() if list(v[1]) == [s.idx for s in own]}
        full = {m: v for m, v in complete.items() if None not in v[1].values()}  # None: no expected score
        people = bool(own) and all(s.id in human for s in own)  # a reviewer scored every sentence
        reason: str | None
        if question.id in flagged:
            reason = "flagged_bad"
        elif question.split in HELD_OUT_SPLITS:
            reason = "held_out_split"
        else:
            reason = None if people else "no_expected_score" if complete and not full else \
                _skip_reason(per_call, pool, full, own)
        if reason:
            skipped[reason] += 1
            continue
        scores, sources = [], []
        for s in own:
            if s.id in human:
                scores.append(human[s.id])
                sources.append("human")
            else:
                scores.append(sum(v[1][s.idx] for v in full.values()) / len(full))
                sources.append(teacher if policy is not ScorePolicy.mean else "mean")
        call_id = full[teacher][0] if teacher in full and policy is not ScorePolicy.mean else None
        model = "+".join(sorted(full)) if policy is ScorePolicy.mean else teacher
        kept.append(ScoredRollout(rationale, question, own, call_id, model, scores, sources))
    return kept, skipped, [query_text(store, q) for q in (rollouts_q, sentences_q, scores_q)]


def write_shard(store: Store, kind: str, round: int, rows: list[dict], skipped: Counter, queries: list[str],
           out_dir: str | Path | None, files: dict[str, list[dict]] | None = None, **details: Any) -> Export:
    """Parquet + manifest.json + an `export` row; refuses an empty shard. `files` splits the rows
    over several parquet files (verl's train/val); the content hash then covers them in order."""
    if not rows:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())) or "no candidates in the store"
        scope = f" round {round}" if round is not None else ""
        raise ExportError(f"nothing to export for {kind}{scope} ({reasons})")
    from datasets import Dataset

    out = Path(out_dir) if out_dir else default_shard_dir(kind, round)
    files = files or {PARQUET: rows}
    digest = hashlib.sha256()
    for name, part in files.items():
        parquet = out / name
        try:
            out.mkdir(parents=True, exist_ok=True)
            Dataset.from_list(part).to_parquet(str(parquet))
        except (OSError, ValueError, TypeError) as exc:
            raise ExportError(f"cannot write {parquet}: {exc}") from exc
        digest.update(parquet.read_bytes())
    where = {"file": PARQUET} if list(files) == [PARQUET] else {"files": {n: len(p) for n, p in files.items()}}
    manifest = {
        "kind": kind, "round": round, **where, "row_count": len(rows), "columns": list(rows[0]),
        "skipped": dict(skipped), "content_hash": "sha256:" + digest.hexdigest(),
        "code_version": code_version(), "created_at": utcnow().isoformat(), **details,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    with store.session() as session:
        row = Export(kind=kind, round=round, path=str(out.resolve()), row_count=len(rows), skipped=dict(skipped),
                     content_hash=manifest["content_hash"], query=";\n".join(queries),
                     code_version=manifest["code_version"], manifest=manifest)
        session.add(row)
    return row


def _spans(rollout: ScoredRollout) -> tuple[list[int], list[int]]:
    return [s.start_char for s in rollout.sentences], [s.end_char for s in rollout.sentences]


def export_rl(store: Store, round: int, out_dir: str | Path | None = None, teacher: str | None = None,
              scores: ScorePolicy | str = ScorePolicy.human_first, reward: Reward | str = Reward.sampled) -> Export:
    """One row per scored rollout of the round: what sentence-reward PPO trains on."""
    rollouts, skipped, queries = scored_rollouts(store, round, teacher, scores, reward)
    rows: list[dict[str, Any]] = []
    for r in rollouts:
        starts, ends = _spans(r)
        rows.append({
            "rationale_id": r.rationale.id, "question_id": r.question.id, "round": r.rationale.round,
            "model_checkpoint_id": r.rationale.model_checkpoint_id, "prompt": student_prompt(r.question),
            "response": r.rationale.text, "sentence_starts": starts, "sentence_ends": ends, "scores": r.scores,
            "teacher_model": r.teacher_model, "teacher_call_id": r.teacher_call_id, "score_sources": r.sources,
        })
    return write_shard(store, "rl", round, rows, skipped, queries, out_dir, teacher=teacher,
                  scores=ScorePolicy(scores).value, reward=Reward(reward).value)


def _ends_with_answer(text: str, n_choices: int) -> bool:
    sentences = split_sentences(text)
    return bool(sentences) and parse_answer(sentences[-1].text, n_choices) is not None


def _completion(text: str, question: Question, skipped: Counter) -> str | None:
    """The corrected text ending in the answer sentence, or None (counted in `skipped`)."""
    completion = text.strip()
    if not completion:
        skipped["empty_correction"] += 1
        return None
    if not _ends_with_answer(completion, len(question.choices)):
        if question.answer_index is None:
            skipped["no_gold_answer"] += 1
            return None
        completion = f"{completion} {answer_sentence(question.answer_index)}"
    return completion


def export_sft(store: Store, round: int, out_dir: str | Path | None = None, teacher: str | None = None,
               scores: ScorePolicy | str = ScorePolicy.human_first) -> Export:
    """Prompt + the corrected rationale of the round, ending in the answer sentence. `human-first`:
    a reviewer's correction replaces the teacher's for that rationale; `teacher`: only the teachers'
    (of `teacher` when given). Flagged questions are left out."""
    policy = ScorePolicy(scores)
    if policy is ScorePolicy.mean:
        raise ExportError("--scores mean averages sentence scores; an sft export takes human-first or teacher")
    query = (select(Correction, Rationale, Question, TeacherCall.model)
             .join(Rationale, Rationale.id == Correction.corrected_rationale_id)
             .join(Question, Question.id == Rationale.question_id)
             .join(TeacherCall, TeacherCall.id == Correction.teacher_call_id)
             .where(Rationale.source == RationaleSource.correction, Rationale.round == round)
             .order_by(Correction.rationale_id, Correction.id))  # the rollouts' order, not the answers' arrival
    human_q = (select(Rationale, Question).join(Question, Question.id == Rationale.question_id)
               .where(Rationale.source == RationaleSource.student, Rationale.round == round).order_by(Rationale.id))
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    with store.session() as session:
        found = session.exec(query).all()
        people = human_corrections(session) if policy is ScorePolicy.human_first else {}
        reviewed = [(r, q) for r, q in session.exec(human_q) if r.id in people] if people else []
        flagged = flagged_questions(session)
    for correction, corrected, question, model in found:
        reason = ("flagged_bad" if question.id in flagged else "held_out_split" if question.split in HELD_OUT_SPLITS
                  else "human_correction" if correction.rationale_id in people
                  else "other_teacher" if teacher and model != teacher else None)
        if reason:
            skipped[reason] += 1
            continue
        if (completion := _completion(corrected.text, question, skipped)) is not None:
            rows.append({
                "prompt": student_prompt(question), "completion": completion, "rationale_id": corrected.id,
                "source_rationale_id": correction.rationale_id, "question_id": question.id,
                "correction_id": correction.id, "teacher_call_id": correction.teacher_call_id,
                "human_label_id": None, "round": round,
            })
    for rationale, question in reviewed:
        if question.id in flagged:
            skipped["flagged_bad"] += 1
        elif question.split in HELD_OUT_SPLITS:
            skipped["held_out_split"] += 1
        elif (completion := _completion(people[rationale.id].new_text, question, skipped)) is not None:
            rows.append({
                "prompt": student_prompt(question), "completion": completion, "rationale_id": None,
                "source_rationale_id": rationale.id, "question_id": question.id, "correction_id": None,
                "teacher_call_id": None, "human_label_id": people[rationale.id].id, "round": round,
            })
    return write_shard(store, "sft", round, rows, skipped, [query_text(store, q) for q in (query, human_q)], out_dir,
                  teacher=teacher, scores=policy.value)


def read_shard(shard_dir: str | Path) -> list[dict]:
    """The rows of a shard directory, read back through `datasets`."""
    from datasets import load_dataset

    parquet = Path(shard_dir) / PARQUET
    if not parquet.is_file():
        raise ExportError(f"{shard_dir} is not a shard directory (no {PARQUET})")
    try:
        return load_dataset("parquet", data_files=str(parquet), split="train").to_list()
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {parquet}: {exc}") from exc


def find_export(store: Store, shard_dir: str | Path) -> Export | None:
    """The latest `export` row that wrote `shard_dir`, if the store made it."""
    with store.session() as session:
        stmt = select(Export).where(Export.path == str(Path(shard_dir).resolve())).order_by(Export.id.desc())
        return session.exec(stmt).first()


STEP_TAG = "ки"


def _prm_row(item: LabelledRationale, fmt: PRMFormat, threshold: float) -> dict:
    good = [score >= threshold for score in item.scores]
    if fmt is PRMFormat.stepwise:
        return {"prompt": item.prompt, "completions": item.sentences, "labels": good}
    steps = [f"Step {i}: {' '.join(text.split())}" for i, text in enumerate(item.sentences, start=1)]
    return {"input": f"{item.prompt}\n" + "\n".join(f"{step} {STEP_TAG}" for step in steps),
            "label": f"{item.prompt}\n" + "\n".join(f"{step} {'+' if ok else '-'}" for step, ok in zip(steps, good)),
            "task": "ares"}


def export_prm(store: Store, fmt: PRMFormat | str = PRMFormat.stepwise, threshold: float = 0.5,
               out_dir: str | Path | None = None, teacher: str | None = None,
               sources: tuple[str, ...] = ("gold", "student"), rounds: list[int] | None = None) -> Export:
    """One row per rationale the teacher scored in full: its sentences as steps, a step good when
    its score is at least `threshold` (binary labels are what these formats hold)."""
    fmt = PRMFormat(fmt)
    if not 0.0 <= threshold <= 1.0:
        raise ExportError(f"--threshold must lie in [0, 1], not {threshold}")
    items, skipped, teacher = labelled_rationales(store, teacher=teacher, sources=sources, rounds=rounds)
    rows = [_prm_row(item, fmt, threshold) for item in items]
    query = f"v_sentence_labels WHERE labeller = '{teacher}' (sources {','.join(sources)}; rounds {rounds or 'all'})"
    return write_shard(store, f"prm-{fmt.value}", None, rows, skipped, [query], out_dir, teacher=teacher,
                  threshold=threshold, sources=list(sources), rounds=rounds, format=fmt.value)
