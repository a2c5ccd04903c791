-- 0002_audit_views: audit in one SELECT. Documented with examples in docs/sql.md.

CREATE VIEW v_sentence_scores AS
SELECT
    ss.id AS sentence_score_id,
    q.id AS question_id,
    q.dataset,
    q.source_id,
    q.split,
    q.question,
    r.id AS rationale_id,
    r.source AS rationale_source,
    r.round,
    r.sample_index,
    s.id AS sentence_id,
    s.idx AS sentence_idx,
    s.text AS sentence,
    tc.id AS teacher_call_id,
    tc.provider AS teacher_provider,
    tc.model AS teacher_model,
    tc.prompt_version,
    ss.score,
    ss.created_at AS scored_at
FROM sentence_score ss
JOIN sentence s ON s.id = ss.sentence_id
JOIN rationale r ON r.id = s.rationale_id
JOIN question q ON q.id = r.question_id
JOIN teacher_call tc ON tc.id = ss.teacher_call_id;

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
    r.round,
    tc.repair_of_id,
    tc.created_at,
    tc.finished_at
FROM teacher_call tc
LEFT JOIN rationale r ON r.id = tc.rationale_id;

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
    (SELECT COUNT(*) FROM teacher_call tc JOIN rationale r ON r.id = tc.rationale_id
      WHERE r.round = rr.round AND tc.status IN ('failed', 'error')) AS failures,
    (SELECT COALESCE(SUM(tc.cost_usd), 0) FROM teacher_call tc
       JOIN rationale r ON r.id = tc.rationale_id
      WHERE r.round = rr.round) AS cost_usd
FROM (SELECT DISTINCT round FROM rationale WHERE round IS NOT NULL) rr;
