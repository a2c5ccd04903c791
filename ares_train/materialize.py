"""Write a GGUF-packed model as a plain Hugging Face directory.

transformers de-quantizes a GGUF file on every load (~20 s for SmolLM2-135M on 2 cores, ~50 s
under load) and refuses `save_pretrained` on such a model, while servers such as `transformers
serve` want a directory. A fresh model built from the config, given the loaded state dict,
saves fine. `load_student` does this once per GGUF file (`gguf_directory`, keyed by the file's
hash under $ARES_HOME/models) and loads the directory from then on.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ares_data.errors import TrainingError
from ares_data.paths import ares_home

from .loading import load_student, resolve_model_path


def is_finished(out_dir: Path) -> bool:
    return (out_dir / "config.json").is_file() and any(out_dir.glob("*.safetensors"))


def write_directory(loaded: Any, tokenizer: Any, out_dir: Path, name: str) -> Path:
    """Save a loaded (de-quantized) model and its tokenizer to `out_dir`, whole or not at all."""
    from transformers import AutoModelForCausalLM

    fresh = AutoModelForCausalLM.from_config(loaded.config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head may be tied to the embeddings
        raise TrainingError(f"cannot materialize {name!r}: state dict does not match its config")
    tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(out_dir)  # a killed run leaves only the .partial directory behind
    except OSError:
        if not is_finished(out_dir):  # not another process that finished first
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def materialize(model: str, out_dir: Path) -> Path:
    """Save `model` (alias, .gguf file or directory) to `out_dir`; a finished directory is kept."""
    if is_finished(out_dir):
        return out_dir
    directory, gguf_file = resolve_model_path(model)
    if gguf_file is not None:  # the converted copy load_student keeps already is such a directory
        tmp = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
        shutil.copytree(gguf_directory(directory / gguf_file), tmp, copy_function=_link_or_copy)
        tmp.rename(out_dir)
        return out_dir
    loaded, tokenizer = load_student(model)
    return write_directory(loaded, tokenizer, out_dir, model)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (no second copy of the weights on disk), a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_directory(gguf: Path) -> Path:
    """The Hugging Face directory of a GGUF file, converted the first time under
    $ARES_HOME/models/<name>-<sha256 of the file>, so later loads skip the de-quantization."""
    out = ares_home() / "models" / f"{gguf.stem}-{file_digest(gguf)[:16]}"
    if is_finished(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"converting {gguf.name} to a Hugging Face directory, once: {out}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load model {str(gguf)!r}: {str(exc).splitlines()[0]}") from exc
    return write_directory(loaded, tokenizer, out, gguf.name)
