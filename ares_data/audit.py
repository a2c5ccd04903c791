"""Read-side summaries of the store for `ares status` (everything else is plain SQL views)."""

from __future__ import annotations

from .store import TABLES, Store

_BY_SPLIT = """
SELECT dataset, split, COUNT(*) AS questions
FROM question GROUP BY dataset, split ORDER BY dataset, split
"""
_BY_ROUND = """
SELECT r.round, r.source, COALESCE(mc.stage, '-') AS stage, COUNT(*) AS rationales
FROM rationale r LEFT JOIN model_checkpoint mc ON mc.id = r.model_checkpoint_id
WHERE r.round IS NOT NULL
GROUP BY r.round, r.source, mc.stage ORDER BY r.round, r.source, stage
"""
_STAGES = """
SELECT s.round, s.stage, s.status, s.started_at, s.finished_at, COALESCE(s.error, '') AS error
FROM pipeline_stage s JOIN pipeline_run r ON r.id = s.pipeline_run_id
WHERE r.id = (SELECT MAX(id) FROM pipeline_run)
ORDER BY s.round, s.id
"""


def status_tables(store: Store) -> dict[str, tuple[list[str], list]]:
    """Titled (columns, rows) pairs: table counts, questions per split, rationales per round, stages."""
    counts = store.table_counts()
    return {
        "Tables": (["table", "rows"], [(t, counts[t]) for t in TABLES]),
        "Questions": store.query_readonly(_BY_SPLIT),
        "Rounds": store.query_readonly(_BY_ROUND),
        "Stages of the latest `ares train` run": store.query_readonly(_STAGES),
    }
