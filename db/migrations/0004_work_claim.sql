-- 0004_work_claim: several collectors on one store share the work. A collector holds a lease on
-- each rationale it is asking the teacher about and renews it while it works; a lease that is
-- not renewed (its collector died) expires and another collector takes the rationale over.
-- A row lives only while its rationale is in flight.

CREATE TABLE work_claim (
    id {pk},
    kind TEXT NOT NULL CHECK (kind IN ('score', 'correct')),
    rationale_id INTEGER NOT NULL REFERENCES rationale (id),
    teacher TEXT NOT NULL,
    worker TEXT NOT NULL,
    expires_at {ts} NOT NULL,
    CONSTRAINT uq_work_claim UNIQUE (kind, rationale_id, teacher)
);
CREATE INDEX ix_work_claim_worker ON work_claim (worker);
