-- 0001_initial: the ARES store. Column names are a public interface (see docs/sql.md).
-- Tokens {pk}, {json} and {ts} are replaced per dialect by db/migrate.py.

CREATE TABLE question (
    id {pk},
    dataset TEXT NOT NULL,
    source_id TEXT NOT NULL,
    split TEXT NOT NULL,
    question TEXT NOT NULL,
    choices {json} NOT NULL,
    answer_index INTEGER,
    hint TEXT NOT NULL DEFAULT '',
    caption TEXT NOT NULL DEFAULT '',
    image_path TEXT,
    image_sha256 TEXT,
    lecture TEXT NOT NULL DEFAULT '',
    solution TEXT NOT NULL DEFAULT '',
    subject TEXT,
    grade TEXT,
    metadata {json},
    created_at {ts} NOT NULL,
    CONSTRAINT uq_question_source UNIQUE (dataset, source_id)
);
CREATE INDEX ix_question_split ON question (dataset, split);

CREATE TABLE model_checkpoint (
    id {pk},
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    base_model TEXT NOT NULL,
    adapter_path TEXT,
    parent_id INTEGER REFERENCES model_checkpoint (id),
    round INTEGER,
    stage TEXT NOT NULL CHECK (stage IN ('base', 'rl', 'sft')),
    metadata {json},
    created_at {ts} NOT NULL,
    CONSTRAINT uq_model_checkpoint_name UNIQUE (name)
);

CREATE TABLE rationale (
    id {pk},
    question_id INTEGER NOT NULL REFERENCES question (id),
    source TEXT NOT NULL CHECK (source IN ('gold', 'student', 'correction')),
    model_checkpoint_id INTEGER REFERENCES model_checkpoint (id),
    parent_rationale_id INTEGER REFERENCES rationale (id),
    round INTEGER,
    sample_index INTEGER NOT NULL DEFAULT 0,
    text TEXT NOT NULL,
    predicted_answer INTEGER,
    generation {json},
    dedup_key TEXT NOT NULL,
    created_at {ts} NOT NULL,
    CONSTRAINT uq_rationale_dedup_key UNIQUE (dedup_key)
);
CREATE INDEX ix_rationale_round ON rationale (round, source);
CREATE INDEX ix_rationale_question ON rationale (question_id);

CREATE TABLE sentence (
    id {pk},
    rationale_id INTEGER NOT NULL REFERENCES rationale (id),
    idx INTEGER NOT NULL,
    text TEXT NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    CONSTRAINT uq_sentence_position UNIQUE (rationale_id, idx)
);

CREATE TABLE teacher_call (
    id {pk},
    kind TEXT NOT NULL CHECK (kind IN ('score', 'correct', 'judge')),
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_name TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    request {json} NOT NULL,
    response TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'invalid', 'failed', 'error')),
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cached_tokens_in INTEGER,
    cost_usd DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    question_id INTEGER REFERENCES question (id),
    rationale_id INTEGER REFERENCES rationale (id),
    repair_of_id INTEGER REFERENCES teacher_call (id),
    started_at {ts},
    finished_at {ts},
    created_at {ts} NOT NULL,
    CONSTRAINT uq_teacher_call_request_hash UNIQUE (request_hash)
);
CREATE INDEX ix_teacher_call_status ON teacher_call (kind, status, model);
CREATE INDEX ix_teacher_call_rationale ON teacher_call (rationale_id);

CREATE TABLE sentence_score (
    id {pk},
    sentence_id INTEGER NOT NULL REFERENCES sentence (id),
    teacher_call_id INTEGER NOT NULL REFERENCES teacher_call (id),
    score DOUBLE PRECISION NOT NULL CHECK (score >= 0 AND score <= 1),
    created_at {ts} NOT NULL,
    CONSTRAINT uq_sentence_score_call UNIQUE (sentence_id, teacher_call_id)
);
CREATE INDEX ix_sentence_score_call ON sentence_score (teacher_call_id);

CREATE TABLE correction (
    id {pk},
    rationale_id INTEGER NOT NULL REFERENCES rationale (id),
    teacher_call_id INTEGER NOT NULL REFERENCES teacher_call (id),
    corrected_rationale_id INTEGER NOT NULL REFERENCES rationale (id),
    text TEXT NOT NULL,
    edit_distance INTEGER NOT NULL,
    created_at {ts} NOT NULL,
    CONSTRAINT uq_correction_call UNIQUE (rationale_id, teacher_call_id)
);

CREATE TABLE export (
    id {pk},
    kind TEXT NOT NULL,
    round INTEGER,
    path TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    skipped {json},
    content_hash TEXT NOT NULL,
    query TEXT NOT NULL,
    code_version TEXT NOT NULL,
    manifest {json},
    created_at {ts} NOT NULL
);

CREATE TABLE training_run (
    id {pk},
    kind TEXT NOT NULL CHECK (kind IN ('rl', 'sft')),
    round INTEGER,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    config {json},
    metrics {json},
    input_checkpoint_id INTEGER REFERENCES model_checkpoint (id),
    output_checkpoint_id INTEGER REFERENCES model_checkpoint (id),
    export_id INTEGER REFERENCES export (id),
    error TEXT,
    started_at {ts} NOT NULL,
    finished_at {ts}
);

CREATE TABLE eval_result (
    id {pk},
    kind TEXT NOT NULL CHECK (kind IN ('accuracy', 'winrate')),
    model_checkpoint_id INTEGER NOT NULL REFERENCES model_checkpoint (id),
    opponent_checkpoint_id INTEGER REFERENCES model_checkpoint (id),
    question_id INTEGER NOT NULL REFERENCES question (id),
    split TEXT NOT NULL,
    rationale_id INTEGER REFERENCES rationale (id),
    predicted_answer INTEGER,
    correct BOOLEAN,
    outcome TEXT CHECK (outcome IN ('win', 'tie', 'loss')),
    a_position TEXT CHECK (a_position IN ('A', 'B')),
    teacher_call_id INTEGER REFERENCES teacher_call (id),
    details {json},
    created_at {ts} NOT NULL
);
CREATE INDEX ix_eval_result_checkpoint ON eval_result (kind, model_checkpoint_id);
