"""Agreement between labellers (each teacher model, and 'human'), read from the `v_agreement` view:
the SQL there is the one definition, so `ares agreement` and an auditor's SELECT give the same figures."""

from __future__ import annotations

from ..store import Store

COLUMNS = ("labeller_a", "labeller_b", "shared_sentences", "spearman", "pearson", "mean_abs_diff", "exact_agreement")


def agreement(store: Store, round: int | None = None) -> list[dict]:
    """One dict per pair of labellers that scored the same sentences: of `round`, or of all rounds."""
    where = "round = :round" if round is not None else "round IS NULL"
    columns, rows = store.query_readonly(
        f"SELECT {', '.join(COLUMNS)} FROM v_agreement WHERE {where} ORDER BY labeller_a, labeller_b",
        {"round": round} if round is not None else None)
    return [dict(zip(columns, row)) for row in rows]
