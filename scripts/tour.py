"""Run the README's tour against `ares fake-teacher` and write what each command prints (docs/tour.md).

    python scripts/tour.py --out docs/tour.md     # `make tour`: write the transcript
    python scripts/tour.py --check docs/tour.md   # exit 1, with a diff, if the file is not what the tour prints

Every command runs in a fresh store in a temporary folder, in this process (the CLI's own runner,
so its output is what a pipe gets), against the fake teacher on 127.0.0.1 (deterministic answers;
`concurrency: 1` in the teacher settings keeps the prompt-cache figures the same on every run).
The student stages (`generate`, `train`) need minutes and the `train` extra: `make demo` runs them.
What changes from run to run (the temporary folder, the port, the time) is written as a placeholder.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 40  # of one command's output; the rest is counted
HEADER = """# The tour, as it prints

Made by `python scripts/tour.py --out docs/tour.md` (`make tour`): the README's tour run in a fresh
store against `ares fake-teacher` (deterministic answers, so the figures are not a real teacher's).
`tests/test_tour.py` fails when this file is not what the commands print. Long outputs are cut to
{max_lines} lines; `$TOUR` is the temporary folder. The teacher settings come from
`ARES_TEACHER_CONFIG=$TOUR/teacher.yaml`:

```yaml
{teacher_yaml}```

The student stages (`ares generate`, `ares train`) need the `train` extra and minutes on a CPU:
`make demo` runs them with the embedded SmolLM2 model.
"""
# (section title, commands); a command starting with `#` is a comment shown as it is.
TOUR: list[tuple[str, list[str]]] = [
    ("A new store", [
        "ares init",
        "ares status",
        "ares import example",
        "ares status",
    ]),
    ("The teacher: dry run, then the calls", [
        "ares collect-scores --rationales gold --limit 20 --model gpt-4o --dry-run",
        "ares collect-scores --rationales gold --limit 20 --model gpt-4o --rpm 500 --max-cost 2",
        "# the same --limit again asks nothing; a dry run of the rest is calibrated on the calls above",
        "ares collect-scores --rationales gold --limit 20 --model gpt-4o",
        "ares collect-scores --rationales gold --model gpt-4o --dry-run",
        'ares sql --timeout 10 "SELECT model, calls, retried_attempts, timeouts, answered_usd, unread_usd_max '
        'FROM v_teacher_spend"',
    ]),
    ("Two teachers, and how they agree", [
        "ares agreement",
        "ares collect-scores --rationales gold --limit 8 --model gpt-4o-mini",
        "# the fake teacher scores a sentence by hashing its text, whatever the model: its teachers agree fully",
        "ares agreement",
    ]),
    ("Audit and report", [
        'ares sql "SELECT * FROM v_round_summary"',
        'ares sql "SELECT status, error, COUNT(*) FROM v_teacher_calls GROUP BY 1, 2" --csv',
        "ares status",
        "ares report --out report/",
        "head -n 14 report/report.md",
        'ares split "Dr. Smith paid $1.50. Then he left!" --json',
    ]),
]
TEACHER_YAML = "base_url: http://127.0.0.1:$PORT/v1\nconcurrency: 1\n"


def _trim(text: str) -> str:
    lines = text.rstrip("\n").splitlines()
    if len(lines) > MAX_LINES:
        lines = [*lines[:MAX_LINES], f"… ({len(lines) - MAX_LINES} more lines)"]
    return "\n".join(lines)


def _run(command: str, work: Path) -> str:
    """What `command` prints (stdout, then stderr), with its exit status when not 0."""
    from typer.testing import CliRunner

    from ares_data.cli import app

    argv = shlex.split(command)
    if argv[0] == "head":  # a look at a file the tour wrote
        lines = int(argv[2])
        return "\n".join((work / argv[3]).read_text(encoding="utf-8").splitlines()[:lines])
    result = CliRunner().invoke(app, argv[1:])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise RuntimeError(f"{command}: {result.exception!r}") from result.exception
    out = result.stdout + result.stderr
    return out + (f"(exit {result.exit_code})\n" if result.exit_code else "")


def _placeholders(text: str, work: Path, port: int) -> str:
    text = text.replace(str(work), "$TOUR").replace(f"127.0.0.1:{port}", "127.0.0.1:$PORT")
    return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "YYYY-MM-DD HH:MM UTC", text)


def transcript() -> str:
    """The tour's Markdown: each command and what it printed."""
    from ares_data.fake_teacher import serve_in_thread

    with tempfile.TemporaryDirectory(prefix="ares-tour-") as tmp:
        work = Path(tmp).resolve()
        os.chdir(work)
        for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ARES_TEACHER_MODEL"):
            os.environ.pop(key, None)
        os.environ.update(ARES_DB=str(work / "ares.db"), ARES_HOME=str(work / "home"),
                          ARES_TEACHER_CONFIG=str(work / "teacher.yaml"), COLUMNS="100")
        with serve_in_thread(log=work / "requests.jsonl") as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            (work / "teacher.yaml").write_text(TEACHER_YAML.replace("$PORT", str(port)))
            parts = [HEADER.format(max_lines=MAX_LINES, teacher_yaml=TEACHER_YAML)]
            for title, commands in TOUR:
                parts.append(f"## {title}\n")
                for command in commands:
                    if command.startswith("#"):
                        parts.append(command[1:].strip().capitalize() + ".\n")
                        continue
                    output = _placeholders(_trim(_run(command, work)), work, port)
                    parts.append(f"```console\n$ {command}\n{output}\n```\n")
        requests = len((work / "requests.jsonl").read_text().splitlines())
        parts.append(f"The fake teacher answered {requests} requests, each logged as a JSON line by "
                     "`ares fake-teacher --log FILE`.\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the transcript here")
    group.add_argument("--check", type=Path, help="compare the transcript with this file")
    args = parser.parse_args(argv)
    target = (args.out or args.check).resolve()
    text = transcript()
    if args.out:
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}")
        return 0
    diff = list(difflib.unified_diff(target.read_text(encoding="utf-8").splitlines(), text.splitlines(),
                                     str(target), "what the tour prints now", lineterm=""))
    if diff:
        print("\n".join(diff[:200]))
        print(f"{target} is out of date: run `make tour` (python scripts/tour.py --out {args.check})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
