"""ARES effect v2: does sentence feedback help when the teacher is as fallible as an LLM, against fair baselines?

Task: `ares_data.checkable` v2 (chained one-digit arithmetic, 5-6 operations for the rounds, dev
and test, a distractor sentence in each question, the ten digits as options), imported with
`import_jsonl`. Teacher: the fake teacher on 127.0.0.1 with the `arith` rule judge made fallible
by a profile (`ares_data/teacher_profiles.py`: `exact`, `llm`, `sparse`), errors drawn per request
and seeded per seed, the same server for every arm of a seed. Student: `small` (a random 4-layer
Llama with a task tokenizer) or `smollm2`, prepared once by gold SFT on 2-4-operation questions
(plus a share of 5-6-operation ones) until its dev accuracy plateaus, then calibrated (gold SFT
continued on half 5-6-operation batches at a lower rate) until it writes 20-35 % of round-length
chains right (`ares_effect_arms.prepare`, both phases cached); every seed starts from it
(preparing one costs ~24 min on 2 cores) with its own round, dev and test questions, teacher
errors and samples.

Arms, each on its own store, the same student, questions and teacher, the same number of
student samples per round question (`--samples`; ares samples half before its PPO, half after):

- `base`: no training;
- `gold_sft`: SFT on the round questions' gold rationales, one per student sample (an oracle, run
  in the `exact` sanity sweep: its teacher is the same under every profile);
- `sft_only`: generate -> the profile teacher's corrections -> SFT;
- `rl_outcome` / `rl_sentence`: generate -> scores -> PPO, identical but for the reward: the answer
  check (a program, exact under every profile) at the last token, or the profile teacher's
  sentence scores at each sentence's end; one arm per advantage estimator (`--advantages`);
- `ares`: `run_loop` (sentence-score PPO, then correction SFT), one per advantage estimator.

Each arm's learning rate is chosen on a dev split (final-round dev accuracy, mean over seeds;
ares tries the RL grid at sft_only's chosen SFT rate); every round's checkpoint (ares: its RL one
too) is measured on dev; the test split (fresh per seed) is used once, for the chosen run's final
checkpoint. Differences are paired per question within a seed, with a bootstrap over seeds x
questions (`ares_effect_stats.py`). Printed: a table per profile, the differences, and last one
JSON line: each arm's test accuracy, right chains and teacher output tokens per profile,
`ares - sft_only` and `rl_sentence - rl_outcome` per advantage with 95 % intervals, the verdict.

    .venv/bin/python benchmarks/ares_effect.py --quick            # 1 seed, llm, core arms: 13 min (37 preparing)
    .venv/bin/python benchmarks/ares_effect.py --plot docs/ares_effect_v2.png  # 4 seeds, llm and sparse
    .venv/bin/python benchmarks/ares_effect.py --profiles exact --arms base,gold_sft,sft_only,ares  # sanity
    .venv/bin/python benchmarks/ares_effect.py --combine llm.out --combine sparse.out  # runs side by side
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ares_data.errors import AresError
from ares_data.fake_teacher import serve_in_thread
from ares_data.judges import make_judge
from ares_data.teacher import TeacherConfig
from ares_data.teacher_profiles import PROFILES, make_profile
from ares_effect_arms import (KINDS, Plan, arms_of, checked_advantages, console, plan_json, prep_key, prepare,
                              seed_questions, tune, write_tasks)
from ares_effect_stats import bootstrap, difference, verdict

QUICK = dict(seeds=1, profiles=("llm",), rounds=2, round_questions=32, samples=4, rl_lrs=(3e-4,), sft_lrs=(1e-3,))
# SmolLM2 is pretrained: a gentler preparation and LoRA learning rates of the usual size.
STUDENTS: dict[str, dict[str, Any]] = {
    "small": {},
    "smollm2": dict(rl_lrs=(1e-4,), sft_lrs=(2e-4,), prep_batch=8, prep_lr=5e-5, prep_check_every=10,
                    prep_max_steps=300),
}


def teachers_for(stack: ExitStack, profile: str, rates: dict[str, float], seeds: int) -> dict[int, dict]:
    """Per seed, the servers every arm of that seed asks: the profile's arith teacher (its errors
    seeded by the seed), the answer check of rl_outcome, and gold_sft's oracle."""
    rules = make_profile(profile, **rates)
    out = {}
    for seed in range(seeds):
        judges = {"arith": make_judge("arith", rules, seed), "outcome": make_judge("outcome"),
                  "gold": make_judge("gold")}
        out[seed] = {name: TeacherConfig.from_options(base_url=stack.enter_context(serve_in_thread(judge=judge)),
                                                      model=f"rule-{profile}-{name}", rpm=60000, timeout=30)
                     for name, judge in judges.items()}
    return out


def run(plan: Plan, work: Path, rates: dict[str, float]) -> tuple[dict[str, dict], list[dict]]:
    """Every profile's arms on every seed: per profile, per arm, `tune`'s result; the student."""
    questions = {seed: seed_questions(plan, seed) for seed in range(plan.seeds)}
    info = prepare(plan, questions[0], 0, work / "students" / prep_key(plan) / "seed-0")
    console.print(f"student after {info['step']} gold SFT steps ({info['seconds']:.0f} s): dev accuracy "
                  f"{info['dev_accuracy']:.2f} (2-4 ops), right chains {info['calib_chain']:.2f} (5-6 ops), "
                  f"calibrated {info['calibrated']}, plateaued {info['plateaued']}")
    key = hashlib.sha256(json.dumps([plan_json(plan), rates], sort_keys=True).encode()).hexdigest()[:12]
    runs_dir = work / f"runs-{key}"
    runs_dir.mkdir(parents=True, exist_ok=True)
    tasks = {seed: write_tasks(runs_dir / f"tasks-{seed}.jsonl", questions[seed]) for seed in range(plan.seeds)}
    results: dict[str, dict] = {}
    for profile in plan.profiles:
        with ExitStack() as stack:
            teachers, sft_chosen, results[profile] = teachers_for(stack, profile, rates, plan.seeds), None, {}
            for arm in arms_of(plan):
                results[profile][arm.name] = tune(arm, plan, info["model"], tasks, runs_dir / profile, teachers,
                                                  sft_chosen)
                if arm.kind == "sft_only":
                    sft_chosen = results[profile][arm.name]["lrs"]["sft"]
    return results, [_untraced(info)]


def _untraced(info: dict[str, Any]) -> dict[str, Any]:
    """A preparation's summary without its checks (the calibration's and its plateau's)."""
    return {k: _untraced(v) if k == "plateau" else v for k, v in info.items() if k != "trace"}


def comparisons(plan: Plan) -> list[tuple[str, str]]:
    """(arm, against) pairs whose paired difference is reported, when both ran."""
    return [(f"ares/{a}", "sft_only") for a in plan.advantages] + [
        (f"rl_sentence/{a}", f"rl_outcome/{a}") for a in plan.advantages] + [
        ("sft_only", "gold_sft")] + [(f"ares/{a}", "gold_sft") for a in plan.advantages]


def per_round(seeds: list[dict], key: str, metric: str) -> list[float]:
    """Mean over seeds of a dev measure, per round that has it (`dev_rl`: ares's RL checkpoints)."""
    return [statistics.fmean(statistics.fmean(s["rounds"][i][key][metric]) for s in seeds)
            for i in range(len(seeds[0]["rounds"])) if key in seeds[0]["rounds"][i]]


def summarize(results: dict[str, dict], plan: Plan) -> dict[str, Any]:
    """Per profile: each arm's test figures with 95 % intervals, dev curves, spend; the paired
    differences; and per advantage estimator, the verdict."""
    out: dict[str, Any] = {}
    for profile, arms in results.items():
        rows = {}
        for name, r in arms.items():
            seeds = r["seeds"]
            rows[name] = {"lrs": r["lrs"], "dev_by_lr": r["dev_by_lr"],
                          "test_accuracy": bootstrap([s["test"]["accuracy"] for s in seeds]),
                          "test_chain": bootstrap([s["test"]["chain"] for s in seeds]),
                          "teacher_tokens_out": statistics.fmean(s["teacher_tokens_out"] for s in seeds),
                          "teacher_calls": statistics.fmean(s["teacher_calls"] for s in seeds),
                          "samples_per_round": [statistics.fmean(s["rounds"][i]["samples"] for s in seeds)
                                                for i in range(1, len(seeds[0]["rounds"]))],
                          "dev_accuracy": per_round(seeds, "dev", "accuracy"),
                          "dev_chain": per_round(seeds, "dev", "chain"),
                          "dev_accuracy_rl": per_round(seeds, "dev_rl", "accuracy")}
        differences = {f"{a} - {b}": {m: difference([s["test"][m] for s in arms[a]["seeds"]],
                                                    [s["test"][m] for s in arms[b]["seeds"]])
                                      for m in ("accuracy", "chain")}
                       for a, b in comparisons(plan) if a in arms and b in arms}
        out[profile] = {"arms": rows, "differences": differences}
    return {"profiles": out, "verdict": verdicts({p: d["differences"] for p, d in out.items()}, plan.advantages)}


def verdicts(differences: dict[str, dict], advantages: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Per advantage estimator, the verdict rule on the paired differences of every profile."""
    out = {}
    for a in advantages:
        ares = {p: d[f"ares/{a} - sft_only"] for p, d in differences.items() if f"ares/{a} - sft_only" in d}
        rl = {p: d[f"rl_sentence/{a} - rl_outcome/{a}"] for p, d in differences.items()
              if f"rl_sentence/{a} - rl_outcome/{a}" in d}
        out[a] = verdict(ares, rl)
    return out


def combine(paths: list[Path]) -> dict[str, Any]:
    """The JSON lines of runs on different profiles (e.g. `llm` and `sparse` run side by side,
    one thread each) as one: their arms and differences by profile, and the verdict over all."""
    runs = [json.loads(path.read_text().strip().splitlines()[-1]) for path in paths]
    if len({tuple(run["plan"]["advantages"]) for run in runs}) != 1:
        raise typer.BadParameter("--combine takes runs with the same --advantages")
    arms = {p: a for run in runs for p, a in run["arms"].items()}
    differences = {p: d for run in runs for p, d in run["differences"].items()}
    return {"arms": arms, "differences": differences, "verdict": verdicts(differences, runs[0]["plan"]["advantages"]),
            "runs": [{"plan": run["plan"], "minutes": run["minutes"], "prepared": run["prepared"]} for run in runs]}


def _ci(interval: tuple[float, float, float]) -> str:
    return f"{interval[0]:.3f} [{interval[1]:.3f}, {interval[2]:.3f}]"


def print_tables(summary: dict[str, Any], plan: Plan) -> None:
    for profile, data in summary["profiles"].items():
        table = Table(title=f"ARES effect v2, profile {profile} ({plan.student} student, {plan.seeds} seed(s), "
                            f"{plan.round_questions} round questions x {plan.samples} samples, {plan.rounds} rounds, "
                            f"{plan.test_questions} test questions per seed; mean [95% bootstrap interval])")
        for column in ("arm", "learning rates", "dev accuracy by round", "RL checkpoint dev accuracy",
                       "test accuracy", "test right chains", "samples per round", "teacher tokens out"):
            table.add_column(column)
        for name, row in data["arms"].items():
            table.add_row(name, json.dumps(row["lrs"]), " -> ".join(f"{v:.2f}" for v in row["dev_accuracy"]),
                          " -> ".join(f"{v:.2f}" for v in row["dev_accuracy_rl"]) or "-", _ci(row["test_accuracy"]),
                          _ci(row["test_chain"]), ", ".join(f"{v:.0f}" for v in row["samples_per_round"]) or "-",
                          f"{row['teacher_tokens_out']:.0f}")
        console.print(table)
        for pair, diff in data["differences"].items():
            console.print(f"{profile}: {pair}, paired per question: accuracy {_ci(diff['accuracy'])}, "
                          f"right chains {_ci(diff['chain'])}")
    console.print(f"verdict (docs/benchmarks.md, stated in advance): {summary['verdict']}")


def plot(summary: dict[str, Any], path: Path) -> None:
    """Dev accuracy per round per arm, one panel per profile (ares's RL checkpoints dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = summary["profiles"]
    fig, axes = plt.subplots(1, len(profiles), figsize=(5 * len(profiles), 4), squeeze=False)
    for ax, (profile, data) in zip(axes[0], profiles.items()):
        for name, row in data["arms"].items():
            line, = ax.plot(range(len(row["dev_accuracy"])), row["dev_accuracy"], marker="o", label=name)
            if row["dev_accuracy_rl"]:
                ax.plot(range(1, len(row["dev_accuracy_rl"]) + 1), row["dev_accuracy_rl"], linestyle="--",
                        color=line.get_color(), label=f"{name} (RL checkpoint)")
        ax.set_title(f"profile {profile}")
        ax.set_xlabel("round")
        ax.set_ylabel("dev accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise typer.BadParameter(f"{option} takes comma-separated numbers, not {text!r}") from exc


def main(
    student: Annotated[str, typer.Option(help="small: a 4-layer Llama with a task tokenizer; smollm2: the "
                                              "embedded SmolLM2-135M-Instruct; both prepared on gold.")] = "small",
    quick: Annotated[bool, typer.Option(help="One seed, the llm profile, the core arms, one learning rate each, "
                                             "2 rounds of 32 questions x 4 samples.")] = False,
    seeds: Annotated[Optional[int], typer.Option(min=1, help="Seeds (default 4; 1 with --quick).")] = None,
    profiles: Annotated[Optional[str], typer.Option(help="Comma-separated teacher profiles (default llm,sparse; "
                                                         "exact: the sanity sweep).")] = None,
    rates: Annotated[str, typer.Option(help="Rates set over every profile's, e.g. score_flip=0.2,new_slip=0 "
                                            "(ares_data/teacher_profiles.py).")] = "",
    arms: Annotated[Optional[str], typer.Option(help=f"Comma-separated arm kinds among {','.join(KINDS)} (default: "
                                                     "all but gold_sft).")] = None,
    advantages: Annotated[str, typer.Option(help="Comma-separated advantage estimators (gae, grpo); one RL "
                                                 "arm of each kind per estimator.")] = "gae,grpo",
    rounds: Annotated[Optional[int], typer.Option(min=1, help="Rounds per arm (default 3; 2 with --quick).")] = None,
    questions: Annotated[Optional[int], typer.Option(min=1, help="Round questions (default 64).")] = None,
    samples: Annotated[Optional[int], typer.Option(min=2, help="Student samples per round question, every arm "
                                                              "(even; default 8).")] = None,
    dev: Annotated[int, typer.Option(min=1, help="Dev questions per seed.")] = 200,
    test: Annotated[int, typer.Option(min=1, help="Test questions per seed, used once.")] = 500,
    rl_lrs: Annotated[Optional[str], typer.Option(help="PPO learning rates tried per RL arm (default "
                                                       "1e-4,3e-4,1e-3).")] = None,
    sft_lrs: Annotated[Optional[str], typer.Option(help="SFT learning rates tried per SFT arm (default "
                                                        "3e-4,1e-3).")] = None,
    prep_steps: Annotated[Optional[int], typer.Option(min=1, help="Most gold-SFT steps of the preparation's "
                                                                  "plateau phase (default 4000).")] = None,
    calib_steps: Annotated[Optional[int], typer.Option(min=0, help="Most gold-SFT steps of its calibration phase "
                                                                   "(default 2000; 0: none).")] = None,
    prep_questions: Annotated[int, typer.Option(min=1, help="2-4-operation gold rationales the student is "
                                                            "prepared on (plus a tenth of 5-6-op ones).")] = 5000,
    prep_held_out: Annotated[int, typer.Option(min=1, help="Held-out questions of each preparation check: 2-4 "
                                                           "operations (plateau), 5-6 (calibration).")] = 200,
    threads: Annotated[int, typer.Option(min=1, help="torch threads, fixed so a rerun reproduces.")] = 2,
    work: Annotated[Path, typer.Option(help="Stores, checkpoints and the prepared students.")] = Path(
        ".ares-bench/ares_effect_v2"),
    plot_to: Annotated[Optional[Path], typer.Option("--plot", help="Write the dev-accuracy plot (PNG) here.")] = None,
    combine_runs: Annotated[Optional[list[Path]], typer.Option(
        "--combine", help="Run nothing: merge the outputs (their last line) of runs on different profiles and "
                          "print the verdict over all of them. Repeat per file.")] = None,
) -> None:
    if combine_runs:
        print(json.dumps(_rounded(combine(combine_runs))))
        return
    import torch

    torch.set_num_threads(threads)
    if student not in STUDENTS:
        raise typer.BadParameter(f"--student is one of {', '.join(STUDENTS)}")
    plan = replace(Plan(student=student), **{**STUDENTS[student], **(QUICK if quick else {})})
    chosen = tuple(k for k in KINDS if k in (arms.split(",") if arms else plan.kinds))
    if arms and (not chosen or set(arms.split(",")) - set(KINDS)):
        raise typer.BadParameter(f"--arms takes a comma-separated subset of {','.join(KINDS)}")
    names = tuple(profiles.split(",")) if profiles else plan.profiles
    if set(names) - set(PROFILES):
        raise typer.BadParameter(f"--profiles takes a comma-separated subset of {','.join(PROFILES)}")
    overrides = dict(pair.split("=", 1) for pair in rates.split(",") if pair)
    try:
        chosen_advantages = checked_advantages(tuple(advantages.split(",")))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        plan = replace(plan, seeds=seeds or plan.seeds, profiles=names, kinds=chosen, rounds=rounds or plan.rounds,
                       round_questions=questions or plan.round_questions, samples=samples or plan.samples,
                       dev_questions=dev, test_questions=test, threads=threads,
                       advantages=chosen_advantages,
                       rl_lrs=_floats(rl_lrs, "--rl-lrs") if rl_lrs else plan.rl_lrs,
                       sft_lrs=_floats(sft_lrs, "--sft-lrs") if sft_lrs else plan.sft_lrs,
                       prep_max_steps=prep_steps or plan.prep_max_steps, prep_questions=prep_questions,
                       prep_calib_steps=plan.prep_calib_steps if calib_steps is None else calib_steps,
                       prep_dev=prep_held_out, prep_calib=prep_held_out)
        rules = {k: float(v) for k, v in overrides.items()}
        make_profile("exact", **rules)  # a bad rate name or value fails here, before any work
    except (ValueError, TypeError) as exc:
        raise typer.BadParameter(f"--rates: {exc}") from exc
    if plan.samples % 2:
        raise typer.BadParameter("--samples must be even: ares samples half before its PPO and half after")
    plan = replace(plan, prep_check_every=min(plan.prep_check_every, plan.prep_max_steps),
                   prep_calib_check_every=min(plan.prep_calib_check_every, plan.prep_calib_steps or 1))
    started = time.monotonic()
    results, prepared = run(plan, work.resolve(), rules)
    summary = summarize(results, plan)
    print_tables(summary, plan)
    if plot_to:
        plot(summary, plot_to)
        console.print(f"plot: {plot_to}")
    final = {p: {name: {"test_accuracy": row["test_accuracy"], "test_chain": row["test_chain"],
                        "teacher_tokens_out": row["teacher_tokens_out"], "lrs": row["lrs"],
                        "dev_accuracy": row["dev_accuracy"], "dev_accuracy_rl": row["dev_accuracy_rl"],
                        "samples_per_round": row["samples_per_round"]}
                 for name, row in data["arms"].items()} for p, data in summary["profiles"].items()}
    print(json.dumps(_rounded({"arms": final, "differences": {p: d["differences"]
                                                              for p, d in summary["profiles"].items()},
                               "verdict": summary["verdict"], "prepared": prepared, "rates": rules,
                               "plan": plan_json(plan), "minutes": (time.monotonic() - started) / 60,
                               "cpu_minutes": time.process_time() / 60})))


if __name__ == "__main__":
    try:
        typer.run(main)
    except AresError as exc:
        raise SystemExit(f"error: {exc}") from exc
