-- 0007_teacher_batch: OpenAI Batch API mode (`collect-scores --batch`). One row per remote batch:
-- the input file uploaded, the batch created from it, its progress as last seen, and the output
-- and error files once it ended. `ingested_at` is set when its answers were stored
-- (`ares batch ingest`); a batch is ingested once. `teacher_batch_request` links every request
-- of a batch (custom_id = request hash) to each rationale it asks about, so a rationale in a
-- batch not yet ingested is not sent again.

CREATE TABLE teacher_batch (
    id {pk},
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('score', 'correct')),
    prompt_name TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    remote_id TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    status TEXT NOT NULL,
    request_count INTEGER NOT NULL,
    completed_count INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    output_file_id TEXT,
    error_file_id TEXT,
    created_at {ts} NOT NULL,
    finished_at {ts},
    ingested_at {ts},
    CONSTRAINT uq_teacher_batch_remote UNIQUE (remote_id)
);
CREATE INDEX ix_teacher_batch_open ON teacher_batch (ingested_at);

CREATE TABLE teacher_batch_request (
    id {pk},
    batch_id INTEGER NOT NULL REFERENCES teacher_batch (id),
    request_hash TEXT NOT NULL,
    rationale_id INTEGER NOT NULL REFERENCES rationale (id),
    CONSTRAINT uq_teacher_batch_request UNIQUE (batch_id, request_hash, rationale_id)
);
CREATE INDEX ix_teacher_batch_request_rationale ON teacher_batch_request (rationale_id);
