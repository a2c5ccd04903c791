"""One error tree: every exception class lives in ares_data/errors.py under AresError, drawn in its docstring."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from ares_data import errors

ROOT = Path(errors.__file__).resolve().parents[1]
# Control flow, not errors (errors.py's docstring says why): allowed beside their code.
SIGNALS = {("ares_data/teacher/calls.py", "Deferred"), ("ares_data/teacher/client.py", "StillAnswering"),
           ("ares_train/loop.py", "Skipped")}


def _error_classes() -> list[type]:
    return [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
            if issubclass(obj, BaseException) and obj.__module__ == errors.__name__]


def test_every_error_is_an_ares_error_and_drawn_in_the_tree():
    classes = _error_classes()
    assert len(classes) > 10
    drawn = errors.__doc__
    for cls in classes:
        assert issubclass(cls, errors.AresError), cls
        assert f" {cls.__name__} " in drawn, f"{cls.__name__} is missing from the tree in errors.py"
    assert "ValidationError" not in {cls.__name__ for cls in classes}  # pydantic's name


def test_the_tree_draws_each_class_under_its_parent():
    drawn = {}  # class name -> column where the tree draws it
    for line in errors.__doc__.splitlines():
        match = re.match(r"^[\s│├└─]*?(\w+)\s", line)
        if match and match.group(1) in {cls.__name__ for cls in _error_classes()}:
            drawn[match.group(1)] = match.start(1)
    for cls in _error_classes():
        if cls is not errors.AresError:
            assert drawn[cls.__name__] == drawn[cls.__bases__[0].__name__] + 4, cls


def test_no_exception_class_is_defined_outside_errors_py():
    found = set()
    for package in ("ares_data", "ares_train"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                bases = [ast.unparse(b) for b in getattr(node, "bases", [])]
                if isinstance(node, ast.ClassDef) and any(b.endswith(("Error", "Exception")) or b in {
                        c.__name__ for c in _error_classes()} for b in bases):
                    found.add((str(path.relative_to(ROOT)), node.name))
    assert found - {("ares_data/errors.py", cls.__name__) for cls in _error_classes()} == SIGNALS
