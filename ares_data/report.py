"""`ares report`: a Markdown report with PNG plots per round, and the tables behind them.

Every figure is read back from the store with the SQL shown in the report, so a reader can
rerun it. matplotlib is imported only here (the `train` extra installs it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from .audit import ALL_SPEND_SQL, ROUND_SQL, ROUNDS_TITLE, round_summary
from .errors import AresError
from .evaluation import win_rate
from .store import Store, redact
from .tables import utcnow

RL_SQL = "SELECT round, metrics FROM training_run WHERE kind = 'rl' AND status = 'done' ORDER BY round, id"
ACCURACY_SQL = """
SELECT mc.name AS checkpoint, mc.round, mc.stage, e.split, COUNT(*) AS questions,
       AVG(CASE WHEN e.correct THEN 1.0 ELSE 0.0 END) AS accuracy
FROM eval_result e JOIN model_checkpoint mc ON mc.id = e.model_checkpoint_id
WHERE e.kind = 'accuracy'
GROUP BY mc.name, mc.round, mc.stage, e.split ORDER BY mc.round, mc.name
"""
WINRATE_SQL = """
SELECT a.name AS checkpoint, a.round, b.name AS opponent, e.outcome
FROM eval_result e JOIN model_checkpoint a ON a.id = e.model_checkpoint_id
JOIN model_checkpoint b ON b.id = e.opponent_checkpoint_id
WHERE e.kind = 'winrate' ORDER BY a.round, a.name
"""
STUDENTS_SQL = "SELECT name, base_model FROM model_checkpoint WHERE stage = 'base' ORDER BY id"
TEACHERS_SQL = "SELECT model, COUNT(*) AS calls FROM teacher_call GROUP BY model ORDER BY COUNT(*) DESC, model"
UNIT = (0.0, 1.0)  # the axis of a score, an accuracy, a win rate: never zoomed onto one point


@dataclass
class Series:
    """One plot, and the table behind it (shown under it) when it has one."""

    title: str
    ylabel: str
    points: list[tuple[float, float]]  # (round, value)
    ylim: tuple[float, float] | None = None  # fixed y axis (0-1 quantities)
    table: tuple[list[str], list] | None = None
    note: str = ""  # a line under the plot


def _rl_points(store: Store) -> tuple[list, list]:
    """Mean reward and KL per round, averaged over the logged PPO steps."""
    reward, kl = [], []
    for rnd, metrics in store.query_readonly(RL_SQL)[1]:
        steps = (json.loads(metrics) if isinstance(metrics, str) else metrics or {}).get("steps") or []
        if steps:
            reward.append((rnd, fmean(s["mean_reward"] for s in steps)))
            kl.append((rnd, fmean(s["kl"] for s in steps)))
    return reward, kl


def collect_series(store: Store) -> tuple[list[Series], dict[str, tuple[list[str], list]]]:
    """The plotted series, each with the table behind it, and the tables without a plot."""
    rounds = round_summary(store)
    accuracy = store.query_readonly(ACCURACY_SQL)
    pairs: dict[tuple, list[str]] = {}
    for name, rnd, opponent, outcome in store.query_readonly(WINRATE_SQL)[1]:
        pairs.setdefault((name, rnd, opponent), []).append(outcome)
    winrows = []
    for (name, rnd, opponent), outcomes in pairs.items():
        wr = win_rate(outcomes)
        winrows.append((name, rnd, opponent, wr.wins, wr.ties, wr.losses, round(wr.rate, 4),
                        f"[{wr.low:.3f}, {wr.high:.3f}]"))
    reward, kl = _rl_points(store)
    by_round = [r for r in rounds[1] if isinstance(r[0], int)]  # without the `other calls` and `total` rows
    series = [
        Series("Mean sentence score", "score", [(r[0], r[4]) for r in by_round if r[4] is not None], UNIT),
        Series("RL reward (mean per step)", "reward", reward),
        Series("RL KL to reference", "KL", kl),
        Series("Accuracy", "accuracy", [(r[1], r[5]) for r in accuracy[1] if r[1] is not None], UNIT, accuracy),
        Series("Win rate", "win rate", [(r[1], r[6]) for r in winrows if r[1] is not None], UNIT,
               (["checkpoint", "round", "opponent", "wins", "ties", "losses", "win_rate", "95% CI"], winrows)),
        Series("Teacher cost", "USD", [(r[0], r[7]) for r in by_round],
               note=f"Round 0: the gold rationales. Total over every teacher call: ${rounds[1][-1][7]:.4f}."
               if rounds[1] else ""),
    ]
    return series, {ROUNDS_TITLE: rounds}


def header(store: Store) -> list[str]:
    """Which store, when, and which student and teacher models the report is about."""
    students = [f"{name} ({base})" if base != name else name for name, base in store.query_readonly(STUDENTS_SQL)[1]]
    teachers = [f"{model} ({calls} calls)" for model, calls in store.query_readonly(TEACHERS_SQL)[1]]
    return [f"- Store: `{redact(store.url)}`", f"- Written: {utcnow():%Y-%m-%d %H:%M} UTC",
            f"- Student: {', '.join(students) or 'none yet'}", f"- Teacher: {', '.join(teachers) or 'none yet'}"]


def plot(series: Series) -> Any:
    """The matplotlib figure of one series (a fixed 0-1 axis for scores, accuracy, win rate)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    xs, ys = zip(*sorted(series.points))
    ax.plot(xs, ys, marker="o")
    ax.set(title=series.title, xlabel="round", ylabel=series.ylabel)
    if series.ylim is not None:
        ax.set_ylim(*series.ylim)
    ax.set_xticks(sorted(set(xs)))
    fig.tight_layout()
    return fig


def _markdown_table(columns: list[str], rows: list) -> str:
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in title.lower()).strip("_")


def write_report(store: Store, out_dir: Path) -> Path:
    """Write `report.md` and one PNG per series into `out_dir`; return the Markdown path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise AresError("ares report needs matplotlib: pip install 'ares-toolkit[train]'") from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    series, tables = collect_series(store)
    parts = ["# ARES report", "", *header(store), ""]
    for title, (columns, rows) in tables.items():
        parts += [f"## {title}", "", _markdown_table(columns, rows) if rows else "_No rows._", ""]
    for s in series:
        parts += [f"## {s.title}", ""]
        if s.points:
            fig = plot(s)
            png = f"{_slug(s.title)}.png"
            fig.savefig(out_dir / png, dpi=100)
            plt.close(fig)
            parts += [f"![{s.title}]({png})", ""]
        else:
            parts += ["_No data yet._", ""]
        if s.note:
            parts += [s.note, ""]
        if s.table is not None and s.table[1]:
            parts += [_markdown_table(*s.table), ""]
    parts += ["## Queries", "", "```sql", ROUND_SQL, ALL_SPEND_SQL, RL_SQL, ACCURACY_SQL.strip(), WINRATE_SQL.strip(),
              STUDENTS_SQL, TEACHERS_SQL, "```", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
