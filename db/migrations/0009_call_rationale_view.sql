-- 0009_call_rationale_view: which rationales a teacher call was about, for single calls
-- (`teacher_call.rationale_id`) and grouped calls (`teacher_call_rationale`) alike, and the
-- audit views rebuilt on it so grouped calls count in their round's failures and cost.

CREATE VIEW v_call_rationale AS
SELECT id AS teacher_call_id, rationale_id FROM teacher_call WHERE rationale_id IS NOT NULL
UNION
SELECT teacher_call_id, rationale_id FROM teacher_call_rationale;

DROP VIEW v_teacher_calls;
CREATE VIEW v_teacher_calls AS
SELECT
    tc.id,
    tc.kind,
    tc.status,
    tc.provider,
    tc.model,
    tc.prompt_name,
    tc.prompt_version,
    tc.attempts,
    tc.tokens_in,
    tc.tokens_out,
    tc.cached_tokens_in,
    tc.cost_usd,
    tc.latency_ms,
    tc.error,
    tc.question_id,
    tc.rationale_id,
    (SELECT COUNT(*) FROM v_call_rationale l WHERE l.teacher_call_id = tc.id) AS rationales,
    (SELECT MIN(r.round) FROM v_call_rationale l JOIN rationale r ON r.id = l.rationale_id
      WHERE l.teacher_call_id = tc.id) AS round,
    tc.repair_of_id,
    tc.created_at,
    tc.finished_at
FROM teacher_call tc;

DROP VIEW v_round_summary;
CREATE VIEW v_round_summary AS
SELECT
    rr.round,
    (SELECT COUNT(*) FROM rationale r
      WHERE r.round = rr.round AND r.source = 'student') AS rationales,
    (SELECT COUNT(*) FROM sentence s JOIN rationale r ON r.id = s.rationale_id
      WHERE r.round = rr.round AND r.source = 'student') AS sentences,
    (SELECT COUNT(DISTINCT ss.sentence_id) FROM sentence_score ss
       JOIN sentence s ON s.id = ss.sentence_id
       JOIN rationale r ON r.id = s.rationale_id
      WHERE r.round = rr.round AND r.source = 'student') AS scored_sentences,
    (SELECT AVG(ss.score) FROM sentence_score ss
       JOIN sentence s ON s.id = ss.sentence_id
       JOIN rationale r ON r.id = s.rationale_id
      WHERE r.round = rr.round AND r.source = 'student') AS mean_score,
    (SELECT COUNT(*) FROM correction c JOIN rationale r ON r.id = c.rationale_id
      WHERE r.round = rr.round) AS corrections,
    (SELECT COUNT(*) FROM teacher_call tc
      WHERE tc.status IN ('failed', 'error') AND tc.id IN (
        SELECT l.teacher_call_id FROM v_call_rationale l JOIN rationale r ON r.id = l.rationale_id
         WHERE r.round = rr.round)) AS failures,
    (SELECT COALESCE(SUM(tc.cost_usd), 0) FROM teacher_call tc
      WHERE tc.id IN (
        SELECT l.teacher_call_id FROM v_call_rationale l JOIN rationale r ON r.id = l.rationale_id
         WHERE r.round = rr.round)) AS cost_usd
FROM (SELECT DISTINCT round FROM rationale WHERE round IS NOT NULL) rr;
