"""SQLModel classes mapped onto the tables that `db/migrations/*.sql` create.

The SQL files own the schema; these classes only map it (a test checks that both agree).
All timestamps are timezone-aware datetimes in UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _json(name: str | None = None, nullable: bool = True) -> Any:
    kind = JSON(none_as_null=True)  # Python None is SQL NULL, so `WHERE metadata IS NULL` works
    col = Column(name, kind, nullable=nullable) if name else Column(kind, nullable=nullable)
    return Field(default=None, sa_column=col)


class Question(SQLModel, table=True):
    __tablename__ = "question"
    id: Optional[int] = Field(default=None, primary_key=True)
    dataset: str
    source_id: str
    split: str
    question: str
    choices: list = Field(sa_column=Column(JSON, nullable=False))
    answer_index: Optional[int] = None
    hint: str = ""
    caption: str = ""
    image_path: Optional[str] = None
    image_sha256: Optional[str] = None
    lecture: str = ""
    solution: str = ""
    subject: Optional[str] = None
    grade: Optional[str] = None
    meta: Optional[dict] = _json("metadata")
    created_at: datetime = Field(default_factory=utcnow)


class ModelCheckpoint(SQLModel, table=True):
    __tablename__ = "model_checkpoint"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str
    path: str
    base_model: str
    adapter_path: Optional[str] = None
    parent_id: Optional[int] = Field(default=None, foreign_key="model_checkpoint.id")
    round: Optional[int] = None
    stage: str  # base | rl | sft | prm (0016)
    meta: Optional[dict] = _json("metadata")
    created_at: datetime = Field(default_factory=utcnow)


class Rationale(SQLModel, table=True):
    __tablename__ = "rationale"
    id: Optional[int] = Field(default=None, primary_key=True)
    question_id: int = Field(foreign_key="question.id")
    source: str  # gold | student | correction
    model_checkpoint_id: Optional[int] = Field(default=None, foreign_key="model_checkpoint.id")
    parent_rationale_id: Optional[int] = Field(default=None, foreign_key="rationale.id")
    round: Optional[int] = None
    sample_index: int = 0
    text: str
    predicted_answer: Optional[int] = None
    generation: Optional[dict] = _json()
    dedup_key: str
    created_at: datetime = Field(default_factory=utcnow)


class Sentence(SQLModel, table=True):
    __tablename__ = "sentence"
    id: Optional[int] = Field(default=None, primary_key=True)
    rationale_id: int = Field(foreign_key="rationale.id")
    idx: int
    text: str
    start_char: int
    end_char: int


class TeacherCall(SQLModel, table=True):
    __tablename__ = "teacher_call"
    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str  # score | correct | judge
    provider: str
    model: str
    prompt_name: str
    prompt_version: str
    request_hash: str
    request: dict = Field(sa_column=Column(JSON, nullable=False))
    response: Optional[str] = None
    status: str  # ok | invalid | failed | error
    error: Optional[str] = None
    attempts: int = 0
    tokens_in: Optional[int] = None
    tokens_out: Optional[int] = None
    cached_tokens_in: Optional[int] = None
    cache_write_tokens_in: Optional[int] = None
    score_logprobs: Optional[list] = _json()  # per score: the tokens that wrote it, with top logprobs (0008)
    finish_reason: Optional[str] = None  # stop | length | content_filter | refusal ... (0011)
    cost_usd: Optional[float] = None
    latency_ms: Optional[float] = None
    request_id: Optional[str] = None  # the provider's x-request-id of the answer (0013)
    model_snapshot: Optional[str] = None  # the `model` the provider says answered (0013)
    reasoning_tokens: Optional[int] = None  # the reasoning part of tokens_out (0013)
    question_id: Optional[int] = Field(default=None, foreign_key="question.id")
    rationale_id: Optional[int] = Field(default=None, foreign_key="rationale.id")
    repair_of_id: Optional[int] = Field(default=None, foreign_key="teacher_call.id")
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    created_at: datetime = Field(default_factory=utcnow)


class TeacherCallRationale(SQLModel, table=True):
    """Every rationale a grouped scoring call asked about (migration 0006)."""

    __tablename__ = "teacher_call_rationale"
    id: Optional[int] = Field(default=None, primary_key=True)
    teacher_call_id: int = Field(foreign_key="teacher_call.id")
    rationale_id: int = Field(foreign_key="rationale.id")


class SentenceScore(SQLModel, table=True):
    __tablename__ = "sentence_score"
    id: Optional[int] = Field(default=None, primary_key=True)
    sentence_id: int = Field(foreign_key="sentence.id")
    teacher_call_id: int = Field(foreign_key="teacher_call.id")
    score: float
    expected_score: Optional[float] = None  # under the teacher's token distribution (0008)
    score_distribution: Optional[dict] = _json()  # {"0.7": p, ...} over the 0.1 grid, normalised
    score_mass: Optional[float] = None  # the probability mass that distribution covered (0013)
    created_at: datetime = Field(default_factory=utcnow)


class Correction(SQLModel, table=True):
    __tablename__ = "correction"
    id: Optional[int] = Field(default=None, primary_key=True)
    rationale_id: int = Field(foreign_key="rationale.id")
    teacher_call_id: int = Field(foreign_key="teacher_call.id")
    corrected_rationale_id: int = Field(foreign_key="rationale.id")
    text: str
    edit_distance: int
    created_at: datetime = Field(default_factory=utcnow)


class Export(SQLModel, table=True):
    __tablename__ = "export"
    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str
    round: Optional[int] = None
    path: str
    row_count: int
    skipped: Optional[dict] = _json()
    content_hash: str
    query: str
    code_version: str
    manifest: Optional[dict] = _json()
    created_at: datetime = Field(default_factory=utcnow)


class TrainingRun(SQLModel, table=True):
    __tablename__ = "training_run"
    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str  # rl | sft | prm (0016)
    round: Optional[int] = None
    status: str  # running | done | failed
    config: Optional[dict] = _json()
    metrics: Optional[dict] = _json()
    input_checkpoint_id: Optional[int] = Field(default=None, foreign_key="model_checkpoint.id")
    output_checkpoint_id: Optional[int] = Field(default=None, foreign_key="model_checkpoint.id")
    export_id: Optional[int] = Field(default=None, foreign_key="export.id")
    error: Optional[str] = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class EvalResult(SQLModel, table=True):
    __tablename__ = "eval_result"
    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str  # accuracy | winrate
    model_checkpoint_id: int = Field(foreign_key="model_checkpoint.id")
    opponent_checkpoint_id: Optional[int] = Field(default=None, foreign_key="model_checkpoint.id")
    question_id: int = Field(foreign_key="question.id")
    split: str
    rationale_id: Optional[int] = Field(default=None, foreign_key="rationale.id")
    predicted_answer: Optional[int] = None
    correct: Optional[bool] = None
    outcome: Optional[str] = None  # win | tie | loss
    a_position: Optional[str] = None  # A | B: where model_checkpoint's rationale was shown
    teacher_call_id: Optional[int] = Field(default=None, foreign_key="teacher_call.id")
    details: Optional[dict] = _json()
    created_at: datetime = Field(default_factory=utcnow)


class PipelineRun(SQLModel, table=True):
    __tablename__ = "pipeline_run"
    id: Optional[int] = Field(default=None, primary_key=True)
    run_key: str  # hash of the effective config without `rounds`: the same command resumes
    config: dict = Field(sa_column=Column(JSON, nullable=False))
    status: str  # running | done | failed
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class PipelineStage(SQLModel, table=True):
    __tablename__ = "pipeline_stage"
    id: Optional[int] = Field(default=None, primary_key=True)
    pipeline_run_id: int = Field(foreign_key="pipeline_run.id")
    round: int
    stage: str
    status: str  # running | done | failed | skipped
    outcome: Optional[dict] = _json()
    error: Optional[str] = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None


class WorkClaim(SQLModel, table=True):
    """A collector's lease on one rationale (kind, teacher model + prompt version) while it asks."""

    __tablename__ = "work_claim"
    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str  # score | correct
    rationale_id: int = Field(foreign_key="rationale.id")
    teacher: str  # "model|prompt_version"
    worker: str  # host:pid:random, unique per collector run
    expires_at: datetime


class TeacherAttempt(SQLModel, table=True):
    """One HTTP attempt of a teacher call, failed ones included (migration 0013)."""

    __tablename__ = "teacher_attempt"
    id: Optional[int] = Field(default=None, primary_key=True)
    teacher_call_id: int = Field(foreign_key="teacher_call.id")
    attempt: int
    outcome: str  # ok | rate_limited | server_error | client_error | timeout | not_sent | network | unreadable
    http_status: Optional[int] = None
    error: Optional[str] = None
    request_id: Optional[str] = None
    model_snapshot: Optional[str] = None
    tokens_in: Optional[int] = None
    tokens_out: Optional[int] = None
    reasoning_tokens: Optional[int] = None
    cost_usd: Optional[float] = None  # priced from the usage the answer reported
    est_cost_usd: Optional[float] = None  # sent but not read back: prompt + max tokens at list price
    latency_ms: Optional[float] = None
    started_at: datetime


class TeacherRateBucket(SQLModel, table=True):
    """The shared request and token schedule of one provider account (migration 0013)."""

    __tablename__ = "teacher_rate_bucket"
    account: str = Field(primary_key=True)
    last_request_at: float = 0.0
    tokens_at: float = 0.0
    paused_until: float = 0.0
    rpm: Optional[float] = None
    tpm: Optional[float] = None
    updated_at: Optional[datetime] = None


class TeacherBatch(SQLModel, table=True):
    """One remote OpenAI batch of teacher requests (migration 0007)."""

    __tablename__ = "teacher_batch"
    id: Optional[int] = Field(default=None, primary_key=True)
    provider: str
    model: str
    kind: str  # score | correct
    prompt_name: str
    prompt_version: str
    remote_id: str
    input_file_id: str
    status: str  # the API's: validating, in_progress, finalizing, completed, failed, expired, cancelled...
    request_count: int
    completed_count: int = 0
    failed_count: int = 0
    output_file_id: Optional[str] = None
    error_file_id: Optional[str] = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: Optional[datetime] = None
    ingested_at: Optional[datetime] = None
    ares_key: Optional[str] = None  # sent as metadata.ares_key; the row exists before POST /batches (0011)
    error: Optional[str] = None  # why POST /batches failed (0017)


class TeacherBatchRequest(SQLModel, table=True):
    """A request of a batch (its hash is the batch line's custom_id) and a rationale it asks about."""

    __tablename__ = "teacher_batch_request"
    id: Optional[int] = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="teacher_batch.id")
    request_hash: str
    rationale_id: int = Field(foreign_key="rationale.id")
    request: Optional[dict] = _json()  # the stored body of the submitted line (0011)
    repair_of_id: Optional[int] = Field(default=None, foreign_key="teacher_call.id")  # the call it repairs
    repair: int = 0  # repairs before it in its chain
    status: str = "pending"  # pending | answered | failed | error | unreadable (0011)
    error: Optional[str] = None


class RequestClaim(SQLModel, table=True):
    """A collector's lease on one request hash while it asks (0011): one sender per request."""

    __tablename__ = "request_claim"
    id: Optional[int] = Field(default=None, primary_key=True)
    request_hash: str
    worker: str
    expires_at: datetime


class HumanLabel(SQLModel, table=True):
    """One reviewer's change: a sentence score, a correction text or a question flag (latest wins)."""

    __tablename__ = "human_label"
    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str  # score | correction | flag
    question_id: int = Field(foreign_key="question.id")
    rationale_id: Optional[int] = Field(default=None, foreign_key="rationale.id")
    sentence_id: Optional[int] = Field(default=None, foreign_key="sentence.id")
    old_score: Optional[float] = None
    new_score: Optional[float] = None
    old_text: Optional[str] = None
    new_text: Optional[str] = None  # flag: 'bad' or 'ok'
    reviewer: str
    origin: str  # review | label-studio
    created_at: datetime = Field(default_factory=utcnow)
