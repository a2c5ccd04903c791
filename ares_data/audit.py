"""Read-side summaries of the store for `ares status` (everything else is plain SQL views)."""

from __future__ import annotations

from .store import TABLES, Store

_BY_SPLIT = """
SELECT dataset, split, COUNT(*) AS questions
FROM question GROUP BY dataset, split ORDER BY dataset, split
"""
# Round 0: the gold rationales (imported, without a round) and the corrections of them.
_BY_ROUND = """
SELECT COALESCE(r.round, 0) AS round, r.source, COALESCE(mc.stage, '-') AS stage, COUNT(*) AS rationales
FROM rationale r LEFT JOIN model_checkpoint mc ON mc.id = r.model_checkpoint_id
GROUP BY COALESCE(r.round, 0), r.source, mc.stage ORDER BY round, r.source, stage
"""
ROUND_SQL = ("SELECT round, rationales, sentences, scored_sentences, mean_score, corrections, failures, cost_usd "
             "FROM v_round_summary ORDER BY round")
ALL_SPEND_SQL = "SELECT COALESCE(SUM(cost_usd), 0) FROM teacher_call"
_STAGES = """
SELECT s.round, s.stage, s.status, s.started_at, s.finished_at, COALESCE(s.error, '') AS error
FROM pipeline_stage s JOIN pipeline_run r ON r.id = s.pipeline_run_id
WHERE r.id = (SELECT MAX(id) FROM pipeline_run)
ORDER BY s.round, s.id
"""
ROUNDS_TITLE = "Rounds (v_round_summary; round 0: gold rationales)"


def round_summary(store: Store) -> tuple[list[str], list[tuple]]:
    """v_round_summary with a `total` row (every teacher call's cost) and, when some calls belong to
    no round (`eval winrate`'s judging), an `other calls` row between them."""
    columns, found = store.query_readonly(ROUND_SQL)
    if not found:
        return columns, []
    mean, cost = columns.index("mean_score"), columns.index("cost_usd")
    spent = float(store.query_readonly(ALL_SPEND_SQL)[1][0][0] or 0)
    other = spent - sum(float(r[cost] or 0) for r in found)
    rows = [tuple(round(v, 4) if i == mean and v is not None else round(float(v or 0), 6) if i == cost else v
                  for i, v in enumerate(r)) for r in found]
    blank = (None,) * (len(columns) - 2)
    extra = [("other calls", *blank, round(other, 6))] if other > 5e-7 else []
    totals = tuple(sum(r[i] or 0 for r in rows) if columns[i] != "mean_score" else None
                   for i in range(1, len(columns) - 1))
    return columns, [*rows, *extra, ("total", *totals, round(spent, 6))]


def status_tables(store: Store) -> dict[str, tuple[list[str], list]]:
    """Titled (columns, rows) pairs: table counts, questions per split, rationales per round, the
    rounds' summary and spend, the latest run's stages."""
    counts = store.table_counts()
    return {
        "Tables": (["table", "rows"], [(t, counts[t]) for t in TABLES]),
        "Questions": store.query_readonly(_BY_SPLIT),
        "Rationales per round": store.query_readonly(_BY_ROUND),
        ROUNDS_TITLE: round_summary(store),
        "Stages of the latest `ares train` run": store.query_readonly(_STAGES),
    }


def next_step(counts: dict[str, int]) -> str | None:
    """What a user does next on a store that holds little yet (what `ares status` suggests)."""
    if not counts["question"]:
        return ("the store is empty; next: `ares import example` (or `ares import scienceqa|aokvqa|jsonl FILE`) "
                "adds questions")
    if not counts["teacher_call"] and not counts["model_checkpoint"]:
        return ("no teacher calls and no student yet; next: `ares collect-scores --rationales gold --dry-run` "
                "(what scoring the gold rationales costs), or `ares train --model smollm2 --rounds 1` (the whole loop)")
    return None
