"""Training stages of a round: PPO on sentence scores (`rl`), then SFT on corrections (`sft`).

Both run through `run_stage`, which owns what they share: the start checkpoint, the
`training_run` row (running -> done | failed, through `ares_data.runs`), and registering the result as the round's
checkpoint `round-N-<stage>`, one LoRA link on top of the checkpoint it started from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from sqlalchemy import exists
from sqlmodel import select

from ares_data.enums import CheckpointStage, RationaleSource, RunKind
from ares_data.errors import AresError, TrainingError
from ares_data.exporters import export_rl, export_sft, find_export, read_shard
from ares_data.tables import Export, ModelCheckpoint, Question, Rationale, Sentence, SentenceScore, TrainingRun
from ares_data.paths import default_checkpoint_dir
from ares_data.runs import fail_training_run, finish_training_run, start_training_run
from ares_data.store import Store

from .loading import checkpoint_chain, ensure_base_checkpoint, find_checkpoint, load_checkpoint
from .placement import resolve as resolve_placement
from .sft_config import SFTRunConfig
from .tracking import check_report_to
from .vision import student_input

METRICS_FILE = "metrics.jsonl"
TrainFn = Callable[[Any, Any, Path], dict]  # (model, tokenizer, output_dir) -> metrics


def checkpoint_name(round: int, stage: str) -> str:
    return f"round-{round}-{stage}"


def _registered(store: Store, name: str) -> ModelCheckpoint | None:
    with store.session() as session:
        return session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == name)).first()


def rollout_checkpoint(store: Store, round: int) -> ModelCheckpoint | None:
    """The checkpoint that generated the round's scored rollouts (PPO starts from it: on-policy)."""
    with store.session() as session:
        # Scored: any sentence has a stored (validated) score, whether its call was single, grouped or reused.
        scored = exists().where(Sentence.rationale_id == Rationale.id, SentenceScore.sentence_id == Sentence.id)
        ids = session.exec(select(Rationale.model_checkpoint_id).distinct()
                           .where(Rationale.source == RationaleSource.student, Rationale.round == round,
                                  Rationale.model_checkpoint_id.is_not(None), scored)).all()
        if len(ids) > 1:
            raise TrainingError(f"round {round} has rollouts from {len(ids)} checkpoints; choose one with --checkpoint")
        return session.get(ModelCheckpoint, ids[0]) if ids else None


def resolve_start(store: Store, stage: str, round: int, *, checkpoint: str | None = None, model: str | None = None,
                  adapters: Sequence[str | Path] = ()) -> ModelCheckpoint:
    """Where a stage starts: `checkpoint` when named; else the round's own (rl: the checkpoint
    that generated its rollouts, sft: `round-N-rl`); else `model` + `adapters` as a base."""
    if checkpoint:
        return find_checkpoint(store, checkpoint)
    found = (rollout_checkpoint(store, round) if stage == RunKind.rl
             else _registered(store, checkpoint_name(round, RunKind.rl)))
    if found is not None:
        return found
    if model:
        return ensure_base_checkpoint(store, model, adapters)
    raise TrainingError(f"no start checkpoint for {stage} round {round}: pass --model or --checkpoint")


def _shard(store: Store, shard_dir: str | Path | None,
           export: Callable[[], Export]) -> tuple[Export | None, list[dict]]:
    """The rows of `shard_dir`, or of a fresh export when none is given, with its `export` row."""
    found = export() if shard_dir is None else find_export(store, shard_dir)
    return found, read_shard(found.path if shard_dir is None else shard_dir)


def _config(cls: type, config: Any, overrides: dict[str, Any] | None) -> Any:
    """`config` as given, else `cls()` with the overrides that are not None."""
    if config is not None:
        return config
    try:
        return cls(**{k: v for k, v in (overrides or {}).items() if v is not None})
    except TypeError as exc:
        raise TrainingError(f"bad {cls.__name__} override: {exc}") from exc


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=float))


def run_stage(store: Store, *, stage: str, round: int | None, start: ModelCheckpoint, export: Export | None,
              output_dir: str | Path | None, config: Any, train: TrainFn, name: str | None = None,
              run_config: dict[str, Any] | None = None) -> ModelCheckpoint:
    """Load `start` on the config's device and dtype, run `train` into the output dir, register
    `name` (default `round-N-<stage>`) on top of it. `run_config` is kept beside the trainer's
    config (what the data was: a PRM's teacher)."""
    name = name or checkpoint_name(round, stage)
    if _registered(store, name) is not None:
        raise TrainingError(f"checkpoint {name} already exists; a round's stage is trained once")
    output = Path(output_dir or default_checkpoint_dir(round, stage)).resolve()
    placement = resolve_placement(config.device, config.dtype)
    config = replace(config, **placement.describe())  # the run records where it ran, not `auto`
    run_id = start_training_run(store, kind=stage, round=round,
                                config=_jsonable({**asdict(config), **(run_config or {})}),
                                input_checkpoint_id=start.id, export_id=export.id if export else None)
    try:
        model, tokenizer, _ = load_checkpoint(store, start, placement)
        output.mkdir(parents=True, exist_ok=True)
        metrics = _jsonable(train(model, tokenizer, output))
    except BaseException as exc:
        fail_training_run(store, run_id, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, AresError) or not isinstance(exc, Exception):
            raise
        what = f"{stage} training of round {round}" if round is not None else f"{name} training"
        raise TrainingError(f"{what} failed: {type(exc).__name__}: {exc}") from exc
    with store.session() as session:
        checkpoint = store.register_checkpoint(
            session, name=name, path=str(output), base_model=start.base_model, adapter_path=str(output),
            parent_id=start.id, round=round, stage=stage, meta={"training_run_id": run_id},
        )
    finish_training_run(store, run_id, metrics=metrics, output_checkpoint_id=checkpoint.id)
    return checkpoint


def training_run_of(store: Store, checkpoint: ModelCheckpoint) -> TrainingRun | None:
    """The run that produced `checkpoint`."""
    with store.session() as session:
        return session.exec(select(TrainingRun).where(TrainingRun.output_checkpoint_id == checkpoint.id)).first()


def questions_of(store: Store, rows: list[dict]) -> dict[int, Question]:
    """The store's question of each shard row, by id: where a VLM student's image is found and checked."""
    with store.session() as session:
        found = session.exec(select(Question).where(Question.id.in_({r["question_id"] for r in rows}))).all()
    return {q.id: q for q in found}


def sampled_tokens(store: Store, rows: list[dict]) -> dict[int, dict[str, Any]]:
    """rationale_id -> what its rollout sampled (token ids, behaviour log-probs, finish reason,
    temperature), for the rows whose generation record keeps it; older rollouts are absent and
    PPO re-tokenises their text (see `ppo_trainer.py`)."""
    with store.session() as session:
        found = session.exec(select(Rationale.id, Rationale.generation)
                             .where(Rationale.id.in_({r["rationale_id"] for r in rows}))).all()
    keys = ("token_ids", "logprobs", "finish_reason")
    return {rid: {**{k: gen[k] for k in keys}, "temperature": gen.get("temperature", 1.0)}
            for rid, gen in found if gen and all(gen.get(k) is not None for k in keys)}


def previous_critic(store: Store, start: ModelCheckpoint) -> str | None:
    """The output dir of the latest RL stage in `start`'s chain (round N-1's, for round N's RL):
    its critic adapter and value head start this run's critic. None before any RL stage."""
    with store.session() as session:
        chain = checkpoint_chain(session, start)
    found = [c.adapter_path for c in chain if c.stage == CheckpointStage.rl and c.adapter_path]
    return found[-1] if found else None


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, default=float) + "\n" for r in records))


def train_rl(store: Store, round: int, *, start: ModelCheckpoint | None = None, shard_dir: str | Path | None = None,
             output_dir: str | Path | None = None, config: Any = None, overrides: dict[str, Any] | None = None,
             teacher: str | None = None, reward: str = "sampled", progress: bool = True) -> ModelCheckpoint:
    """PPO with sentence rewards on the round's RL shard (exported now unless `shard_dir` is given,
    with the `reward` the teacher's labels give: sampled or expected); `config`, else PPOConfig
    fields in `overrides`. `progress`: draw the step bar on stderr."""
    from .ppo_config import PPOConfig
    from .ppo_batches import batches
    from .ppo_trainer import SentenceRewardPPOTrainer
    from .progress import RL_HEADLINE, step_reporter

    config = _config(PPOConfig, config, overrides)
    check_report_to(config.report_to)
    start = start or resolve_start(store, RunKind.rl, round)
    export, rows = _shard(store, shard_dir, lambda: export_rl(store, round, teacher=teacher, reward=reward))

    def train(model: Any, tokenizer: Any, output: Path) -> dict:
        critic = None if config.critic_free else previous_critic(store, start)  # grpo/rloo: no critic at all
        trainer = SentenceRewardPPOTrainer(config, model, tokenizer, critic_from=critic)
        questions, sampled = questions_of(store, rows), sampled_tokens(store, rows)
        samples = []
        for r in rows:
            prompt, image = student_input(tokenizer, r["prompt"], questions.get(r["question_id"]))
            samples.append({"prompt": prompt, "image": image, "response": r["response"], "group": r["question_id"],
                            "sentence_ends": r["sentence_ends"], "scores": r["scores"],
                            **sampled.get(r["rationale_id"], {})})
        total = sum(1 for _ in batches(samples, config.batch_size, config.advantage))
        with step_reporter("PPO", total, RL_HEADLINE, report_to=config.report_to, output_dir=output,
                           config=asdict(config), enabled=progress) as on_step:
            steps = trainer.train(samples, metrics_path=output / METRICS_FILE, on_step=on_step)
        trainer.save(output)
        diff = trainer.rollout_probs_diff()
        return {"steps": steps, **diff, "summary": {
            **(steps[-1] if steps else {}), **diff, "steps": len(steps), "rows": len(rows), "critic_from": critic,
            "stopped_stale": trainer.stopped_stale, "gradient_checkpointing": trainer.gradient_checkpointing,
            "rows_retokenised": sum(r["rationale_id"] not in sampled for r in rows)}}

    return run_stage(store, stage=RunKind.rl, round=round, start=start, export=export, output_dir=output_dir,
                     config=config, train=train)


def train_sft(store: Store, round: int, *, start: ModelCheckpoint | None = None, shard_dir: str | Path | None = None,
              output_dir: str | Path | None = None, config: SFTRunConfig | None = None,
              overrides: dict[str, Any] | None = None, progress: bool = True) -> ModelCheckpoint:
    """SFT (TRL, LoRA) on the round's corrected rationales, by default on top of `round-N-rl`;
    `config`, else SFTRunConfig fields in `overrides`. `progress`: draw the step bar on stderr."""
    from .progress import sft_progress
    from .sft_trainer import train_sft_adapter

    config = _config(SFTRunConfig, config, overrides)
    check_report_to(config.report_to)
    start = start or resolve_start(store, RunKind.sft, round)
    export, rows = _shard(store, shard_dir, lambda: export_sft(store, round))

    def train(model: Any, tokenizer: Any, output: Path) -> dict:
        metrics = train_sft_adapter(config, model, tokenizer, rows, output, questions_of(store, rows),
                                    callbacks=[sft_progress(progress)])
        _write_jsonl(output / METRICS_FILE, metrics["steps"])
        return {**metrics, "summary": {**metrics["summary"], "rows": len(rows)}}

    return run_stage(store, stage=RunKind.sft, round=round, start=start, export=export, output_dir=output_dir,
                     config=config, train=train)
