-- 0006_grouped_calls: one scoring call may cover every rationale of a question
-- (`collect-scores --group-by-question`). `teacher_call_rationale` names each rationale a
-- grouped call asked about (`teacher_call.rationale_id` stays NULL on those calls); the scores
-- still link to their call through `sentence_score.teacher_call_id`. `cache_write_tokens_in`
-- is the part of `tokens_in` the provider wrote to its prompt cache (Anthropic
-- `cache_creation_input_tokens`), as `cached_tokens_in` is the part it read from it.

CREATE TABLE teacher_call_rationale (
    id {pk},
    teacher_call_id INTEGER NOT NULL REFERENCES teacher_call (id),
    rationale_id INTEGER NOT NULL REFERENCES rationale (id),
    CONSTRAINT uq_teacher_call_rationale UNIQUE (teacher_call_id, rationale_id)
);
CREATE INDEX ix_teacher_call_rationale_rationale ON teacher_call_rationale (rationale_id);

ALTER TABLE teacher_call ADD COLUMN cache_write_tokens_in INTEGER;
