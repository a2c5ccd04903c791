-- 0019_round_zero_summary: `v_round_summary` also has a round 0, the gold rationales (imported,
-- without a round) and what the teacher was asked about them, so their spend shows beside the
-- rounds' (it was only in `v_teacher_spend`). A rationale's round is COALESCE(round, 0); the
-- rationales counted are the student's in rounds 1, 2, ... and the gold ones in round 0.

DROP VIEW v_round_summary;
CREATE VIEW v_round_summary AS
SELECT
    rr.round,
    (SELECT COUNT(*) FROM rationale r
      WHERE COALESCE(r.round, 0) = rr.round AND r.source IN ('student', 'gold')) AS rationales,
    (SELECT COUNT(*) FROM sentence s JOIN rationale r ON r.id = s.rationale_id
      WHERE COALESCE(r.round, 0) = rr.round AND r.source IN ('student', 'gold')) AS sentences,
    (SELECT COUNT(DISTINCT ss.sentence_id) FROM sentence_score ss
       JOIN sentence s ON s.id = ss.sentence_id
       JOIN rationale r ON r.id = s.rationale_id
      WHERE COALESCE(r.round, 0) = rr.round AND r.source IN ('student', 'gold')) AS scored_sentences,
    (SELECT AVG(ss.score) FROM sentence_score ss
       JOIN sentence s ON s.id = ss.sentence_id
       JOIN rationale r ON r.id = s.rationale_id
      WHERE COALESCE(r.round, 0) = rr.round AND r.source IN ('student', 'gold')) AS mean_score,
    (SELECT COUNT(*) FROM correction c JOIN rationale r ON r.id = c.rationale_id
      WHERE COALESCE(r.round, 0) = rr.round) AS corrections,
    (SELECT COUNT(*) FROM teacher_call tc
      WHERE tc.status IN ('failed', 'error') AND tc.id IN (
        SELECT l.teacher_call_id FROM v_call_rationale l JOIN rationale r ON r.id = l.rationale_id
         WHERE COALESCE(r.round, 0) = rr.round)) AS failures,
    (SELECT COALESCE(SUM(tc.cost_usd), 0) FROM teacher_call tc
      WHERE tc.id IN (
        SELECT l.teacher_call_id FROM v_call_rationale l JOIN rationale r ON r.id = l.rationale_id
         WHERE COALESCE(r.round, 0) = rr.round)) AS cost_usd
FROM (SELECT DISTINCT COALESCE(round, 0) AS round FROM rationale
       WHERE round IS NOT NULL OR source = 'gold') rr;
