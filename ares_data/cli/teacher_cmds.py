"""Teacher commands: `collect-scores`, `collect-corrections`, `fake-teacher`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..enums import CallKind
from ..rule_names import JudgeName, ProfileName
from ..teacher.config import CollectedRationales, TeacherConfig
from ._common import JsonOpt, RationaleLimitOpt, RoundOpt, err_console, print_summary, store
from .teacher_options import teacher_options

RationalesOpt = Annotated[CollectedRationales, typer.Option(
    "--rationales", help="student: the student's rationales of --round; gold: the imported gold rationales.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Count calls, tokens and cost; send nothing.")]
LeaseOpt = Annotated[float, typer.Option(
    "--lease", min=1.0, metavar="SECONDS", envvar="ARES_LEASE",
    help="Other collectors on the same store take over a rationale this run holds after this long without "
         "a heartbeat (if it died).")]
CheckpointOpt = Annotated[Optional[str], typer.Option(
    "--checkpoint", help="Only rationales this student checkpoint wrote (a round holds rollouts of two).")]
GroupOpt = Annotated[bool, typer.Option(
    "--group-by-question/--no-group-by-question",
    help="Score all selected rationales of a question in one call (the question is sent once: under half "
         "the input tokens per sentence, docs/benchmarks.md), or one call per rationale.")]
BatchOpt = Annotated[bool, typer.Option(
    "--batch", help="Submit the calls to the OpenAI Batch API (half price, answers within 24 h) instead of "
                    "asking now; `ares batch status` and `ares batch ingest` follow them.")]
RetryFailedOpt = Annotated[bool, typer.Option(
    "--retry-failed", help="Ask again the rationales whose requests were given up (invalid after the repairs, "
                           "or refused by the provider, e.g. context length); they are skipped otherwise.")]
MaxGroupOpt = Annotated[int, typer.Option(
    "--max-group", min=1, help="Most rationales in one grouped call; a question with more is split.")]
MaxGroupSentencesOpt = Annotated[int, typer.Option(
    "--max-group-sentences", min=1, help="Most sentences (over all its rationales) in one grouped call.")]
MaxCostOpt = Annotated[Optional[float], typer.Option(
    "--max-cost", metavar="USD", help="Stop before the estimated spend of this run passes this many dollars.")]


def _collect(ctx: typer.Context, teacher: TeacherConfig, batch: bool = False, as_json: bool = False,
             **options) -> None:
    import asyncio

    from ..teacher.batch import BatchLimits
    from ..teacher.collect import CollectRequest, collect
    from .collect_progress import collect_progress

    request = CollectRequest(batch=BatchLimits() if batch else None, **options)
    try:
        with collect_progress(err_console.is_terminal and not request.dry_run and not batch, err_console) as progress:
            summary = asyncio.run(collect(store(ctx), teacher, request, progress=progress))
    except KeyboardInterrupt:
        err_console.print("interrupted: every answer received so far is saved; "
                          "run the same command again to resume (stored answers are not asked again)")
        raise typer.Exit(130) from None
    print_summary(summary, as_json)


@teacher_options
def collect_scores(ctx: typer.Context, round: RoundOpt = None, rationales: RationalesOpt = CollectedRationales.student,
                   limit: RationaleLimitOpt = None, dry_run: DryRunOpt = False, max_cost: MaxCostOpt = None,
                   lease: LeaseOpt = 120.0, checkpoint: CheckpointOpt = None, group_by_question: GroupOpt = True,
                   batch: BatchOpt = False, retry_failed: RetryFailedOpt = False, max_group: MaxGroupOpt = 16,
                   max_group_sentences: MaxGroupSentencesOpt = 160, as_json: JsonOpt = False, *,
                   teacher: TeacherConfig) -> None:
    """Ask the teacher for a 0.0-1.0 score of every sentence of each rationale."""
    from ..teacher.tasks import GroupCap

    _collect(ctx, teacher, batch, as_json, kind=CallKind.score, round=round, rationales=rationales, limit=limit,
             dry_run=dry_run, max_cost=max_cost, lease_s=lease, checkpoint=checkpoint, grouped=group_by_question,
             retry_failed=retry_failed, group_cap=GroupCap(max_group, max_group_sentences))


@teacher_options
def collect_corrections(ctx: typer.Context, round: RoundOpt = None,
                        rationales: RationalesOpt = CollectedRationales.student, limit: RationaleLimitOpt = None,
                        dry_run: DryRunOpt = False, max_cost: MaxCostOpt = None, lease: LeaseOpt = 120.0,
                        checkpoint: CheckpointOpt = None, batch: BatchOpt = False, as_json: JsonOpt = False, *,
                        teacher: TeacherConfig) -> None:
    """Ask the teacher for a minimal correction of each rationale (stored as a new rationale)."""
    _collect(ctx, teacher, batch, as_json, kind=CallKind.correct, round=round, rationales=rationales, limit=limit,
             dry_run=dry_run, max_cost=max_cost, lease_s=lease, checkpoint=checkpoint)


class RateLimitStyle(str, Enum):
    openai = "openai"  # x-ratelimit-*
    anthropic = "anthropic"  # anthropic-ratelimit-*


RateOpt = Annotated[Optional[float], typer.Option(min=0.0, max=1.0, show_default=False,
                                                  help="A teacher-profile rate (see the command's help).")]


def fake_teacher(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.")] = 0.0,
    rpm: Annotated[Optional[float], typer.Option(help="Requests per minute allowed; more get 429.")] = None,
    fault_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of requests that fail "
                                              "(500, timeout, malformed JSON, truncated body, wrong count).")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the fault draws and of the --profile's errors.")] = 0,
    batch_delay_s: Annotated[float, typer.Option(help="Seconds until a Batch API batch ends.")] = 0.0,
    ratelimit_style: Annotated[RateLimitStyle, typer.Option(
        help="Spelling of the rate-limit headers sent with --rpm.")] = RateLimitStyle.openai,
    judge: Annotated[Optional[JudgeName], typer.Option(
        help="A rule teacher that checks each sentence (arith: the `python -m ares_data.checkable` tasks; "
             "outcome: every sentence scores the answer's correctness; gold: arith scores, every correction the gold "
             "rationale) instead of hashing it.")] = None,
    profile: Annotated[ProfileName, typer.Option(
        help="How fallible the --judge is (ares_data/teacher_profiles.py): exact (no errors); llm (10% of scores "
             "flipped, 25% of late false steps missed; corrections 10% missing, 10% invalid, 20% fixing only the "
             "first error, 10% with a new slip, the rest valid, half in another valid order); sparse (llm, "
             "corrections for a quarter of the questions). The rate options below set one rate over the "
             "profile's. Errors are drawn per request, seeded by --seed.")] = ProfileName.exact,
    score_flip: RateOpt = None, miss_late: RateOpt = None, correction_missing: RateOpt = None,
    correction_invalid: RateOpt = None, fix_first_only: RateOpt = None, new_slip: RateOpt = None,
    other_order: RateOpt = None, corrected_share: RateOpt = None,
    log: Annotated[Optional[Path], typer.Option(
        "--log", metavar="FILE", dir_okay=False,
        help="Append every chat request and its answer to FILE, one JSON line each (time, status, request, "
             "response).")] = None,
) -> None:
    """Serve a fake OpenAI-compatible teacher for tests and offline rehearsals (GET /stats for counts).

    Rates (shares, 0-1) over --profile: --score-flip (scores s -> 1 - s), --miss-late (false steps in a
    rationale's second half scored 1.0), --correction-missing (the rationale sent back unchanged),
    --correction-invalid (an empty answer), --fix-first-only (only the first wrong sentence fixed),
    --new-slip (a valid correction with one result off by one), --other-order (a valid correction in
    another valid order), --corrected-share (share of questions that get corrections at all).
    """
    from ..fake_teacher import serve
    from ..judges import make_judge
    from ..teacher_profiles import make_profile

    try:
        rules = make_profile(profile, score_flip=score_flip, miss_late=miss_late,
                             correction_missing=correction_missing, correction_invalid=correction_invalid,
                             fix_first_only=fix_first_only, new_slip=new_slip, other_order=other_order,
                             corrected_share=corrected_share)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    err_console.print(f"fake teacher on http://127.0.0.1:{port}/v1 (stats: /stats)"
                      + (f", requests logged to {log}" if log else "") + "; Ctrl-C stops it")
    serve(port, latency_ms=latency_ms, rpm=rpm, fault_rate=fault_rate, seed=seed, batch_delay_s=batch_delay_s,
          ratelimit_style=ratelimit_style.value, judge=make_judge(judge, rules, seed) if judge else None, log=log)


def register(app: typer.Typer) -> None:
    app.command("collect-scores")(collect_scores)
    app.command("collect-corrections")(collect_corrections)
    app.command("fake-teacher")(fake_teacher)
