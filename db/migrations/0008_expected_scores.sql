-- 0008_expected_scores: probability-weighted scores (`collect-scores --score-from logprobs`).
-- `sentence_score.expected_score` is the expected score under the teacher's token distribution
-- at the score's position, `score_distribution` that distribution over the 0.1 grid as JSON
-- ({"0.6": 0.1, "0.7": 0.6, "0.8": 0.3}, normalised); both NULL for sampled-only calls.
-- `teacher_call.score_logprobs` keeps, per number of the answer, the tokens that wrote it with
-- their top candidates (ares_data/teacher/logprobs.py), so the distributions can be recomputed.

ALTER TABLE sentence_score ADD COLUMN expected_score DOUBLE PRECISION;
ALTER TABLE sentence_score ADD COLUMN score_distribution {json};
ALTER TABLE teacher_call ADD COLUMN score_logprobs {json};
