-- 0017_batch_errors: `teacher_batch.error`: why a batch has no remote batch. A `POST /batches` the
-- API refused for good (a 4xx) marks its `creating` row `failed` with the API's message, and
-- ingested (nothing will come: its rationales are free for the next run); a create that failed
-- otherwise (5xx, network) keeps the row `creating`, its error here, until `ares batch status`
-- finds or creates the batch.

ALTER TABLE teacher_batch ADD COLUMN error TEXT;
