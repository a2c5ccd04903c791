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


def why_empty(store: Store, round: int | None = None) -> str:
    """What an empty agreement lacks: a second labeller, or a sentence two labellers both scored."""
    where = "WHERE round = :round" if round is not None else ""
    found = [name for (name,) in store.query_readonly(
        f"SELECT DISTINCT labeller FROM v_sentence_labels {where} ORDER BY labeller",
        {"round": round} if round is not None else None)[1]]
    scope = f" in round {round}" if round is not None else ""
    if len(found) < 2:
        return (f"needs two labellers on shared sentences{scope}; found {len(found)}"
                + (f": {found[0]}" if found else "") + " (score the same rationales with another --teacher-model, "
                "or label them with `ares review`)")
    return (f"needs two labellers on shared sentences{scope}; found {len(found)} ({', '.join(found)}) "
            "but no sentence that two of them scored")


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
