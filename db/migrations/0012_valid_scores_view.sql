-- 0012_valid_scores_view: a `sentence_score` row only ever holds a validated score, also when
-- its call is `invalid` or `failed` (the lists that passed of a partly invalid grouped answer,
-- which are not asked again): `v_sentence_labels` reads every score row, whatever its call's
-- status. The views built on it are dropped and re-created unchanged (PostgreSQL refuses to
-- drop a view others depend on).

DROP VIEW v_agreement;
DROP VIEW v_label_pairs;
DROP VIEW v_sentence_labels;

-- One score per sentence and labeller: the teacher's latest call that scored it, the latest human label.
CREATE VIEW v_sentence_labels AS
SELECT
    s.id AS sentence_id,
    s.rationale_id,
    r.round,
    tc.model AS labeller,
    ss.score
FROM sentence_score ss
JOIN teacher_call tc ON tc.id = ss.teacher_call_id
JOIN sentence s ON s.id = ss.sentence_id
JOIN rationale r ON r.id = s.rationale_id
WHERE tc.id = (SELECT MAX(tc2.id) FROM sentence_score ss2
               JOIN teacher_call tc2 ON tc2.id = ss2.teacher_call_id
               WHERE ss2.sentence_id = ss.sentence_id AND tc2.model = tc.model)
UNION ALL
SELECT
    s.id AS sentence_id,
    s.rationale_id,
    r.round,
    'human' AS labeller,
    hl.new_score AS score
FROM human_label hl
JOIN sentence s ON s.id = hl.sentence_id
JOIN rationale r ON r.id = s.rationale_id
WHERE hl.kind = 'score'
  AND hl.id = (SELECT MAX(h2.id) FROM human_label h2 WHERE h2.kind = 'score' AND h2.sentence_id = hl.sentence_id);

-- Every sentence two labellers both scored (labeller_a < labeller_b, so each pair once).
CREATE VIEW v_label_pairs AS
SELECT
    a.round,
    a.sentence_id,
    a.labeller AS labeller_a,
    b.labeller AS labeller_b,
    a.score AS score_a,
    b.score AS score_b
FROM v_sentence_labels a
JOIN v_sentence_labels b ON b.sentence_id = a.sentence_id AND a.labeller < b.labeller;

-- Agreement per round and pair of labellers; the rows with round NULL pool every round.
-- Spearman is Pearson on ranks, ties sharing their average rank.
CREATE VIEW v_agreement AS
WITH scoped AS (
    SELECT round, labeller_a, labeller_b, score_a, score_b FROM v_label_pairs
    UNION ALL
    SELECT NULL, labeller_a, labeller_b, score_a, score_b FROM v_label_pairs
), ranked AS (
    SELECT
        round, labeller_a, labeller_b, score_a, score_b,
        RANK() OVER (PARTITION BY round, labeller_a, labeller_b ORDER BY score_a)
          + (COUNT(*) OVER (PARTITION BY round, labeller_a, labeller_b, score_a) - 1) / 2.0 AS rank_a,
        RANK() OVER (PARTITION BY round, labeller_a, labeller_b ORDER BY score_b)
          + (COUNT(*) OVER (PARTITION BY round, labeller_a, labeller_b, score_b) - 1) / 2.0 AS rank_b
    FROM scoped
), sums AS (
    SELECT
        round, labeller_a, labeller_b,
        COUNT(*) AS n,
        SUM(score_a) AS sa, SUM(score_b) AS sb, SUM(score_a * score_b) AS sab,
        SUM(score_a * score_a) AS saa, SUM(score_b * score_b) AS sbb,
        SUM(rank_a) AS ra, SUM(rank_b) AS rb, SUM(rank_a * rank_b) AS rab,
        SUM(rank_a * rank_a) AS raa, SUM(rank_b * rank_b) AS rbb,
        AVG(ABS(score_a - score_b)) AS mad,
        AVG(CASE WHEN ROUND(score_a * 10) = ROUND(score_b * 10) THEN 1.0 ELSE 0.0 END) AS exact
    FROM ranked
    GROUP BY round, labeller_a, labeller_b
)
-- A labeller that gave one value to every shared sentence has no correlation (NULL).
SELECT
    round,
    labeller_a,
    labeller_b,
    n AS shared_sentences,
    CAST(CASE WHEN (n * raa - ra * ra) * (n * rbb - rb * rb) > 1e-9
         THEN (n * rab - ra * rb) / SQRT((n * raa - ra * ra) * (n * rbb - rb * rb)) END AS DOUBLE PRECISION) AS spearman,
    CAST(CASE WHEN (n * saa - sa * sa) * (n * sbb - sb * sb) > 1e-9
         THEN (n * sab - sa * sb) / SQRT((n * saa - sa * sa) * (n * sbb - sb * sb)) END AS DOUBLE PRECISION) AS pearson,
    CAST(mad AS DOUBLE PRECISION) AS mean_abs_diff,
    CAST(exact AS DOUBLE PRECISION) AS exact_agreement
FROM sums;
