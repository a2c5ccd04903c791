"""`ares train`: the alternating loop, one recorded stage at a time.

Per round: generate -> score -> export rl -> train rl -> generate (RL checkpoint) ->
correct -> export sft -> train sft; the next round starts from the SFT checkpoint.
Each stage is a `pipeline_stage` row (running -> done | skipped | failed) whose outcome
names what it produced, so re-running the same command after a crash resumes at the first
unfinished stage. Teacher stages reuse every stored answer (request-hash cache) and
finished training is never repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Callable

from rich.console import Console
from sqlmodel import select

from ares_data.enums import RationaleSource, RunKind, RunStatus, StageStatus
from ares_data.errors import AresError, ExportError
from ares_data.runs import FINISHED, finish_pipeline_run, finish_stage, start_pipeline_run, start_stage
from ares_data.tables import ModelCheckpoint
from ares_data.store import Store
from ares_data.teacher.config import Provider, TeacherConfig

STAGES = ("generate", "score", "export_rl", "train_rl", "generate_rl", "correct", "export_sft", "train_sft")
# Teacher settings that change what is asked (not where or how fast): part of a run's identity.
# The base URL is not: a local server may listen on another port next time.
_TEACHER_IDENTITY = ("provider", "model", "structured_output", "score_from", "temperature", "max_tokens",
                     "max_repairs")


class Skipped(Exception):
    """A stage had nothing to do (e.g. no valid scores to train on); the loop goes on."""


@dataclass
class LoopConfig:
    model: str
    teacher: TeacherConfig
    rounds: int = 1
    split: str = "train"
    k: int = 4
    limit: int | None = None
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 8
    group_by_question: bool = True  # score a question's k rollouts in one teacher call (docs/benchmarks.md)
    device: str = "auto"  # every stage's; a `device` in `rl`/`sft` wins for that stage
    dtype: str = "auto"
    rollout_engine: str = "hf"
    prm: str | None = None  # score with this PRM (`ares train prm`) instead of the teacher; corrections stay its
    report_to: str = "none"  # every training stage's tracker (`tracking.py`); an `rl`/`sft` one wins for that stage
    rl: dict[str, Any] = field(default_factory=dict)  # PPOConfig overrides
    sft: dict[str, Any] = field(default_factory=dict)  # SFT config overrides

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "teacher": self.teacher.describe()}

    def scorer(self) -> TeacherConfig:
        """Who scores the rollouts: the PRM when one is named (on the loop's --device/--dtype), else the teacher."""
        if self.prm is None:
            return self.teacher
        return TeacherConfig.from_options(provider=Provider.prm, model=self.prm, device=self.device, dtype=self.dtype,
                                          concurrency=self.teacher.concurrency)

    def run_key(self) -> str:
        """Same command (any --rounds, rate limits, server address) -> same run, so it resumes."""
        identity = self.describe()
        identity.pop("rounds")
        identity.pop("device")  # where it runs is not what it computes
        identity.pop("report_to")  # nor where its metrics are copied
        identity["teacher"] = {k: identity["teacher"].get(k) for k in _TEACHER_IDENTITY}
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Pipeline:
    """Runs stages once each and records them; `console` prints one line per stage."""

    def __init__(self, store: Store, config: LoopConfig, console: Console | None = None):
        self.store, self.config = store, config
        self.console = console or Console(stderr=True)
        self.run_id = start_pipeline_run(store, config.run_key(), config.describe())

    def stage(self, round: int, name: str, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stage's outcome: stored if it finished before, else from running `work` now."""
        row = start_stage(self.store, self.run_id, round, name)
        if row.status in FINISHED:
            self.console.print(f"round {round} {name}: {row.status} before, reused")
            return row.outcome or {}
        self.console.print(f"round {round} {name}: running")
        started = time.monotonic()
        status, error, outcome = StageStatus.done, None, {}
        try:
            outcome = work()
        except Skipped as why:
            status, outcome = StageStatus.skipped, {"reason": str(why)}
        except BaseException as exc:
            status, error = StageStatus.failed, f"{exc.__class__.__name__}: {exc}"
            raise
        finally:
            finish_stage(self.store, row.id, status, outcome, error)
        shown = {k: v for k, v in outcome.items() if v not in (None, 0, False, "", [], {})}  # the full one is stored
        self.console.print(f"round {round} {name}: {status} in {time.monotonic() - started:.0f} s "
                           f"{json.dumps(shown, default=str)}", highlight=False, soft_wrap=True)
        return outcome

    def run(self, progress: bool = True) -> ModelCheckpoint:
        """Every round in order; returns the last checkpoint."""
        from .loading import ensure_base_checkpoint

        try:
            start = ensure_base_checkpoint(self.store, self.config.model)
            for round in range(1, self.config.rounds + 1):
                start = self._round(round, start, progress)
        except BaseException:
            finish_pipeline_run(self.store, self.run_id, RunStatus.failed)
            raise
        finish_pipeline_run(self.store, self.run_id, RunStatus.done)
        return start

    def _round(self, round: int, start: ModelCheckpoint, progress: bool) -> ModelCheckpoint:
        from ares_data.exporters import export_rl, export_sft
        from ares_data.cli.collect_progress import collect_progress
        from ares_data.teacher.collect import collect_corrections, collect_scores

        from .loading import find_checkpoint
        from .rollout_config import SamplingSettings
        from .rollouts import generate_rollouts
        from .stages import checkpoint_name, train_rl, train_sft

        cfg = self.config
        settings = SamplingSettings(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                    top_k=cfg.top_k, seed=cfg.seed + round, batch_size=cfg.batch_size,
                                    rollout_engine=cfg.rollout_engine, device=cfg.device, dtype=cfg.dtype)
        where = {"device": cfg.device, "dtype": cfg.dtype, "report_to": cfg.report_to}

        def generate(checkpoint: ModelCheckpoint) -> Callable[[], dict]:
            return lambda: generate_rollouts(self.store, checkpoint=checkpoint, round=round, split=cfg.split,
                                             k=cfg.k, limit=cfg.limit, settings=settings, progress=progress)

        def ask(collector: Callable, checkpoint: ModelCheckpoint, teacher: TeacherConfig = cfg.teacher,
                **options: Any) -> Callable[[], dict]:
            def work() -> dict:
                with collect_progress(progress) as report:
                    summary = asyncio.run(collector(self.store, teacher, round=round,
                                                    rationales=RationaleSource.student, checkpoint=checkpoint.name,
                                                    progress=report, **options))
                return _plain(summary)
            return work

        def export(exporter: Callable) -> Callable[[], dict]:
            def work() -> dict:
                try:
                    row = exporter(self.store, round)
                except ExportError as exc:
                    raise Skipped(str(exc)) from exc
                return {"export_id": row.id, "path": row.path, "rows": row.row_count, "skipped": row.skipped}
            return work

        def train(trainer: Callable, stage: str, begin: ModelCheckpoint, shard: dict,
                  overrides: dict) -> Callable[[], dict]:
            def work() -> dict:
                if "path" not in shard:
                    raise Skipped("no shard to train on: " + shard.get("reason", "empty export"))
                with self.store.session() as session:  # trained before this run was recorded
                    done = session.exec(select(ModelCheckpoint).where(
                        ModelCheckpoint.name == checkpoint_name(round, stage),
                        ModelCheckpoint.parent_id == begin.id)).first()
                if done is not None:
                    return {"checkpoint": done.name, "reused": True}
                made = trainer(self.store, round, start=begin, shard_dir=shard["path"], overrides=overrides,
                               progress=progress)
                return {"checkpoint": made.name}
            return work

        def produced(outcome: dict, fallback: ModelCheckpoint) -> ModelCheckpoint:
            return find_checkpoint(self.store, outcome["checkpoint"]) if "checkpoint" in outcome else fallback

        self.stage(round, "generate", generate(start))
        self.stage(round, "score", ask(collect_scores, start, cfg.scorer(), group_by_question=cfg.group_by_question))
        rl_shard = self.stage(round, "export_rl", export(export_rl))
        rl_made = self.stage(round, "train_rl", train(train_rl, RunKind.rl, start, rl_shard, {**where, **cfg.rl}))
        rl = produced(rl_made, start)
        self.stage(round, "generate_rl", generate(rl))
        self.stage(round, "correct", ask(collect_corrections, rl))
        sft_shard = self.stage(round, "export_sft", export(export_sft))
        sft = self.stage(round, "train_sft", train(train_sft, RunKind.sft, rl, sft_shard, {**where, **cfg.sft}))
        return produced(sft, rl)


def _plain(summary: Any) -> dict[str, Any]:
    """A collector summary as JSON-able values. Its fields are read one level deep: `asdict`
    rebuilds a Counter from (key, count) pairs, so `failed` came back keyed by tuples and a
    stage whose teacher failed on any rationale could not record its outcome."""
    data = {f.name: getattr(summary, f.name) for f in fields(summary)} if is_dataclass(summary) else dict(summary)
    return json.loads(json.dumps(data, default=str))


def check_rl(config: LoopConfig) -> None:
    """The `rl` overrides as a PPOConfig, before any rollout is sampled: a bad value, or a
    critic-free advantage with one rollout per question, fails now in one line."""
    from .ppo_config import PPOConfig

    try:
        rl = PPOConfig(**config.rl)
    except TypeError as exc:
        raise AresError(f"bad rl setting: {exc}") from exc
    if rl.critic_free and config.k < 2:
        raise AresError(f"advantage={rl.advantage} compares a question's rollouts with each other: --k must be at "
                        f"least 2, not {config.k}")


def run_loop(store: Store, config: LoopConfig, progress: bool = True) -> ModelCheckpoint:
    if config.rounds < 1:
        raise AresError("--rounds must be at least 1")
    check_rl(config)
    return Pipeline(store, config).run(progress=progress)
