-- 0011_teacher_integrity: nothing lost, nothing paid twice (issue 14).
-- `teacher_call.finish_reason`: why the answer ended (stop, length, content_filter, refusal...);
-- an answer cut at max_tokens or refused is invalid, also when it is reused later.
-- `request_claim`: a collector's lease on one request hash while it asks, so two collectors never
-- send the same request (identical rationales claimed by two collectors wait for one answer).
-- `teacher_batch_request.request`: the stored body of each submitted batch line (custom_id =
-- request_hash), so ingest matches answers to what was sent whatever the flags are now;
-- `repair_of_id` / `repair`: where the line sits in its repair chain (the invalid call it repairs,
-- and how many repairs precede it); `status` / `error`: what ingest made of the line (pending,
-- answered, failed, error, unreadable).
-- `teacher_batch.ares_key`: the id sent in the batch's metadata; the row is written before
-- `POST /batches` (status 'creating'), so a batch created by a run that died is found again.

ALTER TABLE teacher_call ADD COLUMN finish_reason TEXT;

CREATE TABLE request_claim (
    id {pk},
    request_hash TEXT NOT NULL,
    worker TEXT NOT NULL,
    expires_at {ts} NOT NULL,
    CONSTRAINT uq_request_claim UNIQUE (request_hash)
);

ALTER TABLE teacher_batch_request ADD COLUMN request {json};
ALTER TABLE teacher_batch_request ADD COLUMN repair_of_id INTEGER REFERENCES teacher_call (id);
ALTER TABLE teacher_batch_request ADD COLUMN repair INTEGER NOT NULL DEFAULT 0;
ALTER TABLE teacher_batch_request ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
ALTER TABLE teacher_batch_request ADD COLUMN error TEXT;
ALTER TABLE teacher_batch ADD COLUMN ares_key TEXT;
