-- 0013_teacher_audit: the teacher as providers bill and limit it.
-- `teacher_rate_bucket`: one row per provider account (provider, server, model, key; hashed),
-- the request and token schedule every collector on the store draws from, so `--rpm`/`--tpm`
-- are the account's limits (ares_data/teacher/ratelimit.py). Times are epoch seconds;
-- `rpm`/`tpm` the pace learned from the provider's rate-limit headers (NULL: none seen).
-- `teacher_attempt`: every HTTP attempt of a call, failed ones included, with its outcome, so
-- retried spend shows in SQL (`v_teacher_spend`). `cost_usd` is priced from the usage the answer
-- reported; `est_cost_usd` bounds what an attempt that was sent but not read back (a read
-- timeout, a dropped connection, an unreadable answer) may have been billed: its prompt and
-- max tokens at list price. `teacher_call` gains the provider's request id and the model
-- snapshot that answered, and the reasoning part of tokens_out; `sentence_score.score_mass` is
-- the probability mass the logprob distribution of a score covered (teacher/logprobs.py).

CREATE TABLE teacher_rate_bucket (
    account TEXT PRIMARY KEY,
    last_request_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    paused_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    rpm DOUBLE PRECISION,
    tpm DOUBLE PRECISION,
    updated_at {ts}
);

CREATE TABLE teacher_attempt (
    id {pk},
    teacher_call_id INTEGER NOT NULL REFERENCES teacher_call (id),
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'rate_limited', 'server_error', 'client_error', 'timeout',
                                             'not_sent', 'network', 'unreadable')),
    http_status INTEGER,
    error TEXT,
    request_id TEXT,
    model_snapshot TEXT,
    tokens_in INTEGER,
    tokens_out INTEGER,
    reasoning_tokens INTEGER,
    cost_usd DOUBLE PRECISION,
    est_cost_usd DOUBLE PRECISION,
    latency_ms DOUBLE PRECISION,
    started_at {ts} NOT NULL
);
CREATE INDEX ix_teacher_attempt_call ON teacher_attempt (teacher_call_id);

ALTER TABLE teacher_call ADD COLUMN request_id TEXT;
ALTER TABLE teacher_call ADD COLUMN model_snapshot TEXT;
ALTER TABLE teacher_call ADD COLUMN reasoning_tokens INTEGER;
ALTER TABLE sentence_score ADD COLUMN score_mass DOUBLE PRECISION;

-- What the teacher cost per provider, model and kind of call, retries included: `retried_attempts`
-- are the attempts beyond the first of each call; `answered_usd` is priced from reported usage
-- (repaired answers included), `unread_usd_max` the bound on attempts sent but never read back.
CREATE VIEW v_teacher_spend AS
SELECT
    tc.provider,
    tc.model,
    tc.kind,
    COUNT(DISTINCT tc.id) AS calls,
    COUNT(a.id) AS attempts,
    COUNT(a.id) - COUNT(DISTINCT tc.id) AS retried_attempts,
    SUM(CASE WHEN a.outcome = 'rate_limited' THEN 1 ELSE 0 END) AS rate_limited,
    SUM(CASE WHEN a.outcome = 'server_error' THEN 1 ELSE 0 END) AS server_errors,
    SUM(CASE WHEN a.outcome = 'timeout' THEN 1 ELSE 0 END) AS timeouts,
    SUM(CASE WHEN a.outcome IN ('not_sent', 'network', 'unreadable', 'client_error') THEN 1 ELSE 0 END)
        AS other_failures,
    COALESCE(SUM(a.tokens_in), 0) AS tokens_in,
    COALESCE(SUM(a.tokens_out), 0) AS tokens_out,
    COALESCE(SUM(a.reasoning_tokens), 0) AS reasoning_tokens,
    COALESCE(SUM(a.cost_usd), 0) AS answered_usd,
    COALESCE(SUM(a.est_cost_usd), 0) AS unread_usd_max
FROM teacher_call tc JOIN teacher_attempt a ON a.teacher_call_id = tc.id
GROUP BY tc.provider, tc.model, tc.kind;
