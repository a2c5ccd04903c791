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


def prm_teachers(store: Store) -> dict[str, str]:
    """Each registered PRM (`ares train prm`) -> the teacher it learned from (its training run's config)."""
    from sqlmodel import select

    from ..enums import CheckpointStage
    from ..tables import ModelCheckpoint, TrainingRun

    with store.session() as session:
        found = session.exec(select(ModelCheckpoint.name, TrainingRun.config)
                             .join(TrainingRun, TrainingRun.output_checkpoint_id == ModelCheckpoint.id)
                             .where(ModelCheckpoint.stage == CheckpointStage.prm)).all()
    return {name: (config or {}).get("teacher") for name, config in found if (config or {}).get("teacher")}


def prm_against_teacher(rows: list[dict], teachers: dict[str, str]) -> list[dict]:
    """The agreement rows of each PRM with the teacher it learned from, the PRM named first."""
    out = []
    for row in rows:
        for prm, other in ((row["labeller_a"], row["labeller_b"]), (row["labeller_b"], row["labeller_a"])):
            if teachers.get(prm) == other:
                out.append({**row, "labeller_a": prm, "labeller_b": other})
    return out
