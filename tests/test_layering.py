"""The package layering: `ares_data` stands alone, `ares_train` plugs its commands into `ares`."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import ares_data

ARES_DATA = Path(ares_data.__file__).parent
# Runs `ares ARGS...` as if the modules in argv[1] (comma-separated) were not installed.
WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from ares_data.cli import main
sys.argv = ["ares", *sys.argv[2:]]
main()
"""
TRAIN_MODULES = "torch,transformers,trl,peft,accelerate,gguf,sentencepiece,PIL"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_ares_data_never_imports_ares_train_or_torch():
    offenders = {
        f"{path.relative_to(ARES_DATA.parent)}: {module}"
        for path in ARES_DATA.rglob("*.py")
        for module in _imported_modules(path)
        if module.split(".")[0] in ("ares_train", "torch", "transformers", "trl", "peft")
    }
    assert not offenders


def test_help_lists_the_plugin_commands_without_importing_the_store_or_torch():
    """`ares --help` stays fast: the store (sqlmodel, sqlalchemy) and torch load inside commands only."""
    code = ("import sys; from typer.testing import CliRunner; from ares_data.cli import app; "
            "out = CliRunner().invoke(app, ['--help']).output; "
            "print(','.join(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sqlmodel', 'sqlalchemy'}))"
            " or '-', all(f' {c} ' in out for c in ('train', 'generate', 'eval', 'model')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["-", "True"]


def _without(modules: str, *args: str, db: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, "--db", str(db), *args],
                          capture_output=True, text=True)


# The same for several commands in one interpreter (one start instead of one per command):
# prints [exit code, stderr lines] per argument list of argv[2] (JSON).
WITHOUT_EACH = """
import json, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from typer.testing import CliRunner
from ares_data.cli import app
results = [CliRunner().invoke(app, args) for args in json.loads(sys.argv[2])]
print(json.dumps([[r.exit_code, r.stderr.strip().splitlines()] for r in results]))
"""


def test_without_the_train_extra_each_plugin_command_names_the_extra(tmp_path):
    db = str(tmp_path / "ares.db")
    commands = [["train", "--model", "smollm2"], ["train", "rl", "--round", "1"],
                ["generate", "--model", "smollm2", "--round", "1"], ["eval", "accuracy"],
                ["model", "materialize", "smollm2", "--out", str(tmp_path / "m")]]
    store_side = [["init"], ["status"]]  # the store-side commands need no extra
    done = subprocess.run([sys.executable, "-c", WITHOUT_EACH, TRAIN_MODULES,
                           json.dumps([["--db", db, *args] for args in (*commands, *store_side)])],
                          capture_output=True, text=True, check=True)
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for args, (code, stderr) in zip(commands, results):
        assert code == 1, (args, stderr)
        assert stderr == ["error: this needs the 'train' extra (torch is not installed): "
                          "pip install 'ares-toolkit[train]'"], args
    assert [code for code, _ in results[len(commands):]] == [0, 0]


@pytest.mark.parametrize("extra,modules,args", [
    ("review", "textual", ["review"]),
    ("fake-teacher", "starlette,uvicorn,multipart", ["fake-teacher", "--port", "1"]),
])
def test_the_tui_and_the_fake_teacher_name_their_extra(extra, modules, args, tmp_path):
    done = _without(modules, *args, db=tmp_path / "ares.db")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: this needs the '{extra}' extra ({modules.split(',')[0]} "
                                                 f"is not installed): pip install 'ares-toolkit[{extra}]'"]


def test_a_plugin_command_that_no_plugin_registered_says_which_extra(monkeypatch):
    import ares_data.cli as cli

    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    app = typer.Typer(cls=cli.AresGroup)
    app.command()(lambda: None)  # a second command keeps typer from flattening the group
    cli.register_plugins(app)
    result = CliRunner().invoke(app, ["train", "rl", "--round", "1"])
    assert result.exit_code == 1
    assert "`ares train` comes with the 'train' extra: pip install 'ares-toolkit[train]'" in result.output


def test_ares_train_writes_rows_only_through_ares_data():
    """No `session.add` and no table row built in `ares_train`: `Store` and `ares_data.runs` write them."""
    import ares_train
    from ares_data import tables as table_module

    tables = {name for name, obj in vars(table_module).items() if isinstance(obj, type) and hasattr(obj, "__table__")}
    offenders = set()
    for path in Path(ares_train.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            adds = (isinstance(func, ast.Attribute) and func.attr in ("add", "add_all", "delete", "merge")
                    and isinstance(func.value, ast.Name) and func.value.id == "session")
            builds = isinstance(func, ast.Name) and func.id in tables
            if adds or builds:
                offenders.add(f"{path.name}:{node.lineno}")
    assert tables >= {"TrainingRun", "PipelineRun", "PipelineStage", "EvalResult", "ModelCheckpoint"}
    assert not offenders
