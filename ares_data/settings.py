"""Settings files: a TOML or YAML (or JSON) mapping of option names to values.

Option names may use dashes or underscores (`max-new-tokens` = `max_new_tokens`), so a file
can be written from `--help` as read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import AresError


def read_settings(path: Path, what: str = "settings file") -> dict[str, Any]:
    """The file's mapping with normalised keys; one-line errors name the file."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            import yaml

            data = yaml.safe_load(raw) or {}
    except Exception as exc:  # OSError, TOML and YAML errors all read the same to a user
        raise AresError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise AresError(f"{what} {path} must be a mapping of settings")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
