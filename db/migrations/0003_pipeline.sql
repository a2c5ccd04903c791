-- 0003_pipeline: `ares train` records every stage of the alternating loop, so a re-run resumes.

CREATE TABLE pipeline_run (
    id {pk},
    run_key TEXT NOT NULL,
    config {json} NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    started_at {ts} NOT NULL,
    finished_at {ts},
    CONSTRAINT uq_pipeline_run_key UNIQUE (run_key)
);

CREATE TABLE pipeline_stage (
    id {pk},
    pipeline_run_id INTEGER NOT NULL REFERENCES pipeline_run (id),
    round INTEGER NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'skipped')),
    outcome {json},
    error TEXT,
    started_at {ts} NOT NULL,
    finished_at {ts},
    CONSTRAINT uq_pipeline_stage UNIQUE (pipeline_run_id, round, stage)
);
