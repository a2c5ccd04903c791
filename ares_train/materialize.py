"""Write a GGUF-packed model as a plain Hugging Face directory.

transformers de-quantizes a GGUF file on every load (~20 s for SmolLM2-135M on 2 cores) and
refuses `save_pretrained` on such a model, while servers such as `transformers serve` want a
directory. A fresh model built from the config, given the loaded state dict, saves fine.
"""

from __future__ import annotations

from pathlib import Path

from ares_data.errors import TrainingError

from .loading import load_student, resolve_model_path


def materialize(model: str, out_dir: Path) -> Path:
    """Save `model` (alias, .gguf file or directory) to `out_dir`; a finished directory is kept."""
    from transformers import AutoModelForCausalLM

    if (out_dir / "config.json").is_file() and any(out_dir.glob("*.safetensors")):
        return out_dir
    resolve_model_path(model)
    loaded, tokenizer = load_student(model)
    fresh = AutoModelForCausalLM.from_config(loaded.config)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # lm_head may be tied to the embeddings
        raise TrainingError(f"cannot materialize {model!r}: state dict does not match its config")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out_dir)  # a killed run leaves only the .partial directory behind
    return out_dir
