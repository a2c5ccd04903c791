"""The package layering: `ares_data` stands alone, `ares_train` plugs its commands into `ares`."""

from __future__ import annotations

import ast
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


def test_without_the_train_extra_each_plugin_command_names_the_extra(tmp_path):
    for args in (["train", "--model", "smollm2"], ["train", "rl", "--round", "1"],
                 ["generate", "--model", "smollm2", "--round", "1"], ["eval", "accuracy"],
                 ["model", "materialize", "smollm2", "--out", str(tmp_path / "m")]):
        done = _without(TRAIN_MODULES, *args, db=tmp_path / "ares.db")
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr.strip().splitlines() == [
            "error: this needs the 'train' extra (torch is not installed): pip install 'ares-toolkit[train]'"], args
    # the store-side commands need no extra
    assert _without(TRAIN_MODULES, "init", db=tmp_path / "ares.db").returncode == 0
    assert _without(TRAIN_MODULES, "status", db=tmp_path / "ares.db").returncode == 0


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
