"""Settings of the process reward model trainer (`prm_trainer.py`): LoRA on a causal-LM backbone
with a scalar head read at each sentence-end token.

Each field's help text is written once, in its metadata (the convention of `ppo_config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ares_data.errors import TrainingError


def _f(default, help: str):  # noqa: A002 - `help` is the dataclass-metadata convention
    return field(default=default, metadata={"help": help})


@dataclass
class PRMConfig:
    # -- optimisation ---------------------------------------------------------------------
    learning_rate: float = _f(1e-3, "AdamW learning rate of the LoRA adapter and the score head.")
    num_train_epochs: int = _f(3, "Passes over the training questions' rationales.")
    batch_size: int = _f(8, "Rationales per optimizer step (and per scoring forward pass).")
    seed: int = _f(42, "Seed for the head and adapter init, data order and the question split.")
    # -- LoRA -----------------------------------------------------------------------------
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA scaling numerator.")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA input.")
    lora_target_modules: str = _f("all-linear", "Modules that get LoRA (PEFT syntax).")
    # -- data -----------------------------------------------------------------------------
    validation_fraction: float = _f(0.2, "Share of the questions held out (all of a question's rationales "
                                          "go to one side), at least one question when there are two.")
    max_length: int = _f(1024, "Prompt + rationale tokens; sentences ending past this are not trained on.")
    # -- where it runs --------------------------------------------------------------------
    device: str = _f("auto", "auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")
    dtype: str = _f("auto", "auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16.")

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise TrainingError("validation_fraction must lie in [0, 1)")
        if self.batch_size < 1 or self.num_train_epochs < 0:
            raise TrainingError("batch_size must be at least 1 and num_train_epochs at least 0")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text (for CLIs and docs)."""
        return {f.name: f.metadata["help"] for f in fields(cls)}
