-- 0018_spend_maybe_billed: `v_teacher_spend` counts the attempts that were sent and never read
-- back (`maybe_billed`: a read timeout, a dropped connection, an unreadable answer), which the
-- provider may have answered and billed; `unread_usd_max` bounds what they cost. A reasoning
-- model's read timeout is not retried in the run (teacher/client.py), so each one shows here once.

DROP VIEW v_teacher_spend;
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
    COALESCE(SUM(a.est_cost_usd), 0) AS unread_usd_max,
    SUM(CASE WHEN a.outcome IN ('timeout', 'network', 'unreadable') THEN 1 ELSE 0 END) AS maybe_billed
FROM teacher_call tc JOIN teacher_attempt a ON a.teacher_call_id = tc.id
GROUP BY tc.provider, tc.model, tc.kind;
