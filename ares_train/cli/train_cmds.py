"""Training commands: `generate`, `train` (the loop) and `train rl|sft|prm`.

torch, transformers and TRL are imported inside the commands that need them, so `ares --help`
stays light.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.table import Table

from ares_data.cli._common import (JsonOpt, LimitOpt, RoundReq, console, err_console, fail, print_json, print_table,
                                   store)
from ares_data.cli.export_cmds import PRMTeacherOpt, RewardOpt, RoundsOpt, SourcesOpt, TeacherOpt, sources_rounds
from ares_data.cli.teacher_cmds import GroupOpt
from ares_data.cli.teacher_options import check_student, teacher_options
from ares_data.enums import RunKind
from ares_data.extras import require
from ares_data.teacher.logprobs import Reward
from ares_train.ppo_config import PPOConfig
from ares_train.prm_config import PRMConfig
from ares_train.rollout_config import SamplingSettings
from ares_train.sft_config import SFTRunConfig
from ares_train.tracking import ReportTo

from .config_flags import config_flags

if TYPE_CHECKING:
    from ares_data.store import Store
    from ares_data.tables import ModelCheckpoint
    from ares_data.teacher.config import TeacherConfig

ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", envvar="ARES_MODEL",
    help="Student: a Hugging Face model directory, a .gguf file, or 'smollm2'.")]
AdapterOpt = Annotated[Optional[list[Path]], typer.Option(
    "--adapter", exists=True, file_okay=False, help="LoRA adapter merged into --model (repeat for a chain).")]
CheckpointOpt = Annotated[Optional[str], typer.Option(
    "--checkpoint", help="Start from this registered checkpoint (or 'latest') instead of --model.")]
ShardOpt = Annotated[Optional[Path], typer.Option(
    "--shard", exists=True, file_okay=False, help="Shard to train on (default: export the round's now).")]
OutputOpt = Annotated[Optional[Path], typer.Option(
    "--output", help="Adapter output directory (default: $ARES_HOME/checkpoints/round-N-<stage>).")]
# The loop's own sampling options; the rest come from SamplingSettings (`rollout_config.py`).
SplitOpt = Annotated[str, typer.Option("--split", help="Questions of this split.")]
KOpt = Annotated[int, typer.Option("--k", min=1, help="Rationales sampled per question.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", help="Also show other libraries' progress bars and warnings.")]
StepsOpt = Annotated[bool, typer.Option(
    "--verbose", help="Also print the per-step table, and other libraries' progress bars and warnings.")]
# Short spellings kept beside the generated `--field-name` flags.
PPO_ALIASES = {"ppo_epochs": ("--epochs",), "learning_rate": ("--lr",)}
SFT_ALIASES = {"num_train_epochs": ("--epochs",), "learning_rate": ("--lr",)}
SAMPLING, RL, SFT, PRM = "Sampling", "PPO", "SFT", "PRM"


@config_flags(SamplingSettings, into="sampling", panel=SAMPLING)
def generate(
    ctx: typer.Context,
    round: RoundReq,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    checkpoint: CheckpointOpt = None,
    split: SplitOpt = "train",
    k: KOpt = 4,
    limit: LimitOpt = None,
    verbose: VerboseOpt = False,
    *,
    sampling: dict,
) -> None:
    """Sample k rationales per question as the round's rollouts; a re-run adds only what is missing."""
    require("train")
    from ares_train.loading import named_or_base
    from ares_train.progress import library_output
    from ares_train.rollouts import generate_rollouts

    opened = store(ctx)
    check_student(model)
    start = named_or_base(opened, checkpoint=checkpoint, model=model, adapters=adapter or ())
    with library_output(verbose):
        s = generate_rollouts(opened, checkpoint=start, round=round, split=split, k=k, limit=limit,
                              settings=_config(SamplingSettings, sampling))
    rate = f" at {s['questions_per_second']:.2f} questions/s" if s.get("questions_per_second") else ""
    console.print(f"round {round}: {s['rationales_added']} rationales for {s['questions_generated']} questions "
                  f"from {start.name}{rate}; {s['questions_done_before']} questions were already done", soft_wrap=True)
    if s["questions_text_only"]:
        console.print(f"{s['questions_text_only']} of them without an image (none, or its file missing): text only")


train_app = typer.Typer(invoke_without_command=True,
                        help="Train the student: PPO on sentence scores, SFT on corrections.")


# PPOConfig fields the loop takes as flags (and at the top of --config) as well as in its `rl` section.
LOOP_RL = ("advantage",)


@train_app.callback()
@teacher_options(settings_param="config")
@config_flags(SamplingSettings, exclude=("seed",), into="sampling", panel=SAMPLING)
@config_flags(PPOConfig, only=LOOP_RL, into="rl_flags", panel=RL)
def _train(
    ctx: typer.Context,
    model: ModelOpt = None,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Alternating rounds to run.")] = 1,
    split: SplitOpt = "train",
    k: KOpt = 4,
    limit: LimitOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Base seed; round N samples with seed + N.")] = 0,
    group_by_question: GroupOpt = True,
    prm: Annotated[Optional[str], typer.Option(
        "--prm", metavar="NAME|PATH", help="Score the rollouts with this process reward model (`ares train prm`) "
                                           "on --device/--dtype, at no API cost; "
                                           "corrections still ask the teacher.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        "--config", exists=True, dir_okay=False,
        help="TOML/YAML file holding any of these flags (flags given on the command line win), plus "
             "`teacher`, `rl` (PPOConfig fields, as `train rl` takes them) and `sft` (SFTRunConfig fields) "
             "sections.")] = None,
    report_to: Annotated[ReportTo, typer.Option(
        "--report-to", metavar="TRACKER", help="Also log every training stage's steps to tensorboard, wandb or "
                                                "trackio (TRL's report_to); an `rl`/`sft` section of --config may "
                                                "set its own.")] = "none",
    as_json: JsonOpt = False,
    verbose: VerboseOpt = False,
    *,
    sampling: dict,
    rl_flags: dict,
    teacher: "TeacherConfig",
) -> None:
    """Run the alternating loop, or one stage of a round (`train rl`, `train sft`).

    Per round: generate -> collect-scores -> export rl -> train rl -> generate with the RL
    checkpoint -> collect-corrections -> export sft -> train sft; the next round starts from the
    SFT checkpoint. Re-running the same command resumes at the first unfinished stage. --device
    and --dtype apply to every stage (an `rl`/`sft` section of --config may set its own).
    """
    require("train")
    if ctx.invoked_subcommand is not None:
        return
    from ares_data.audit import status_tables
    from ares_data.cli.store_cmds import print_tables
    from ares_data.settings import read_settings
    from ares_train.loop import LoopConfig, run_loop
    from ares_train.progress import library_output

    given = dict(model=model, rounds=rounds, split=split, k=k, limit=limit, seed=seed,
                 group_by_question=group_by_question, prm=prm, report_to=report_to)
    file = read_settings(config) if config else {}
    sampled = {f.name for f in fields(SamplingSettings)} - {"seed"}
    unknown = set(file) - set(given) - sampled - set(LOOP_RL) - {"teacher", "rl", "sft"}
    if unknown:
        raise fail(f"{config}: unknown setting(s) {', '.join(sorted(unknown))}")
    for name in given:  # the file fills what the command line left at its default
        source = ctx.get_parameter_source(name)  # typer's own click: compare by name
        if name in file and (source is None or source.name in ("DEFAULT", "DEFAULT_MAP")):
            given[name] = file[name]
    given.update({name: file[name] for name in sampled if name in file and name not in sampling}, **sampling)
    if not given["model"]:
        raise fail("ares train needs a student: --model PATH|smollm2 (or `model` in --config)")
    check_student(given["model"])
    rl = {**(file.get("rl") or {}), **{name: file[name] for name in LOOP_RL if name in file}, **rl_flags}
    loop = LoopConfig(teacher=teacher, rl=rl, sft=file.get("sft") or {}, **given)
    opened = store(ctx)
    with library_output(verbose):
        last = run_loop(opened, loop, progress=err_console.is_terminal)
    tables = {title: table for title, table in status_tables(opened).items() if title != "Tables"}
    tables["v_round_summary"] = opened.query_readonly("SELECT * FROM v_round_summary ORDER BY round")
    print_tables(tables, as_json)
    (err_console if as_json else console).print(f"done: the latest checkpoint is {last.name}", highlight=False)


def _print_run(opened: "Store", checkpoint: "ModelCheckpoint", shown: tuple[tuple[str, str], ...],
               as_json: bool = False, verbose: bool = False) -> None:
    """A one-line summary of the run (the mean of its `shown` metrics) and where its checkpoint
    went; `verbose` adds the per-step table, `as_json` prints it all as JSON instead."""
    from ares_train.progress import headline
    from ares_train.stages import training_run_of

    run = training_run_of(opened, checkpoint)
    steps = (run.metrics or {}).get("steps") or [] if run else []
    if as_json:
        print_json({"checkpoint": checkpoint.name, "checkpoint_id": checkpoint.id, "parent_id": checkpoint.parent_id,
                    "adapter_path": checkpoint.adapter_path, "steps": steps})
        return
    if steps and verbose:
        columns = sorted({key for step in steps for key in step})
        table = Table(*columns, title=f"{checkpoint.name}: metrics per step")
        for step in steps:
            table.add_row(*(f"{step[c]:.4g}" if isinstance(step.get(c), float) else str(step.get(c, ""))
                            for c in columns))
        print_table(table)
    means, plural = headline(steps, shown), "s" * (len(steps) != 1)
    console.print(f"{checkpoint.name}: {len(steps)} step{plural}" + (f", mean {means}" if means else ""),
                  highlight=False)
    console.print(f"registered {checkpoint.name} (checkpoint {checkpoint.id}, parent {checkpoint.parent_id}) "
                  f"at {checkpoint.adapter_path}", highlight=False, soft_wrap=True)


@train_app.command("rl")
@config_flags(PPOConfig, aliases=PPO_ALIASES, into="ppo", panel=RL, exclude=("lora_dropout",))  # PPO: no dropout
def train_rl_cmd(
    ctx: typer.Context,
    round: RoundReq,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    checkpoint: CheckpointOpt = None,
    shard: ShardOpt = None,
    output: OutputOpt = None,
    teacher: TeacherOpt = None,
    reward: RewardOpt = Reward.sampled,
    as_json: JsonOpt = False,
    verbose: StepsOpt = False,
    *,
    ppo: dict,
) -> None:
    """PPO with sentence rewards from the round's scored rollouts -> checkpoint round-N-rl.

    Starts from --checkpoint, else the checkpoint that generated the rollouts, else --model.
    A --batch-size below the default mini-batch size shrinks the mini-batch with it.
    """
    require("train")
    from ares_train.progress import RL_HEADLINE, library_output
    from ares_train.stages import resolve_start, train_rl

    opened = store(ctx)
    check_student(model)
    start = resolve_start(opened, RunKind.rl, round, checkpoint=checkpoint, model=model, adapters=adapter or ())
    if "batch_size" in ppo and "mini_batch_size" not in ppo:
        ppo["mini_batch_size"] = min(PPOConfig().mini_batch_size, ppo["batch_size"])
    with library_output(verbose):
        made = train_rl(opened, round, start=start, shard_dir=shard, output_dir=output, overrides=ppo,
                        teacher=teacher, reward=reward)
    _print_run(opened, made, RL_HEADLINE, as_json, verbose)


@train_app.command("sft")
@config_flags(SFTRunConfig, aliases=SFT_ALIASES, into="sft", panel=SFT)
def train_sft_cmd(
    ctx: typer.Context,
    round: RoundReq,
    model: ModelOpt = None,
    adapter: AdapterOpt = None,
    checkpoint: CheckpointOpt = None,
    shard: ShardOpt = None,
    output: OutputOpt = None,
    as_json: JsonOpt = False,
    verbose: StepsOpt = False,
    *,
    sft: dict,
) -> None:
    """SFT (LoRA) on the round's corrected rationales -> checkpoint round-N-sft.

    Starts from --checkpoint, else round-N-rl when registered, else --model.
    """
    require("train")
    from ares_train.progress import LOSS_HEADLINE, library_output
    from ares_train.stages import resolve_start, train_sft

    opened = store(ctx)
    check_student(model)
    start = resolve_start(opened, RunKind.sft, round, checkpoint=checkpoint, model=model, adapters=adapter or ())
    with library_output(verbose):
        made = train_sft(opened, round, start=start, shard_dir=shard, output_dir=output, overrides=sft)
    _print_run(opened, made, LOSS_HEADLINE, as_json, verbose)


def _config(cls: type, given: dict) -> Any:
    """`cls` with the flags given; a bad value says which flag in one line."""
    from ares_data.errors import AresError

    try:
        return cls(**given)
    except (TypeError, AresError) as exc:
        raise fail(str(exc)) from exc


BackboneOpt = Annotated[Optional[str], typer.Option(
    "--model", help="The PRM's backbone: a Hugging Face model directory, a .gguf file, or 'smollm2'.")]


@train_app.command("prm")
@config_flags(PRMConfig, aliases=SFT_ALIASES, into="prm_options", panel=PRM)
def train_prm_cmd(
    ctx: typer.Context,
    model: BackboneOpt = None,
    adapter: AdapterOpt = None,
    checkpoint: CheckpointOpt = None,
    teacher: PRMTeacherOpt = None,
    sources: SourcesOpt = "gold,student",
    rounds: RoundsOpt = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", help="PRM output directory (default: $ARES_HOME/checkpoints/prm-N).")] = None,
    verbose: VerboseOpt = False,
    *,
    prm_options: dict,
) -> None:
    """A process reward model distilled from the teacher's sentence scores -> checkpoint prm-N (stage prm).

    LoRA on the backbone (--model or --checkpoint) plus a scalar head read at each sentence end,
    regressed onto the teacher's scores; split by question, validation MAE and Spearman recorded
    (docs/prm.md).
    """
    require("train")
    from ares_train.loading import named_or_base
    from ares_train.progress import library_output
    from ares_train.prm_trainer import train_prm
    from ares_train.stages import training_run_of

    names, numbers = sources_rounds(sources, rounds)
    config = _config(PRMConfig, prm_options)
    opened = store(ctx)
    start = named_or_base(opened, checkpoint=checkpoint, model=model, adapters=adapter or ())
    with library_output(verbose):
        prm = train_prm(opened, start, config=config, teacher=teacher, sources=names, rounds=numbers,
                        output_dir=output)
    metrics = training_run_of(opened, prm).metrics or {}
    table = Table("epoch", "val sentences", "val MAE", "val Spearman",
                  title=f"{prm.name}: validation against {metrics.get('data', {}).get('teacher')}")
    for row in metrics.get("epochs", []):
        table.add_row(str(row["epoch"]), str(row["val_sentences"]), *(
            "-" if row[k] is None else f"{row[k]:.3f}" for k in ("val_mae", "val_spearman")))
    console.print(table)
    console.print(f"registered {prm.name} (checkpoint {prm.id}, stage prm, on {start.name}) at {prm.adapter_path}",
                  highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(generate)
    app.add_typer(train_app, name="train")
