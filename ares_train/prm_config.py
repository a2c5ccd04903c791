"""Settings of the process reward model trainer (`prm_trainer.py`): LoRA on a causal-LM backbone
with a scalar head read at each sentence-end token.

Each field's help text is written once, in its metadata (`options.py`); `ares train prm` builds
its flags from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from ares_data.errors import TrainingError

from .options import option
from .placement import DEVICE_HELP, DTYPE_HELP, DtypeName
from .tracking import REPORT_TO_HELP, ReportTo


@dataclass
class PRMConfig:
    # -- optimisation ---------------------------------------------------------------------
    learning_rate: float = option(1e-3, "AdamW learning rate of the LoRA adapter and the score head.")
    num_train_epochs: int = option(3, "Passes over the training questions' rationales.")
    batch_size: int = option(8, "Rationales per optimizer step (and per scoring forward pass).")
    seed: int = option(42, "Seed for the head and adapter init, data order and the question split.")
    # -- LoRA -----------------------------------------------------------------------------
    lora_r: int = option(8, "LoRA rank.")
    lora_alpha: int = option(16, "LoRA scaling numerator.")
    lora_dropout: float = option(0.0, "Dropout on the LoRA input.")
    lora_target_modules: str = option("all-linear", "Modules that get LoRA (PEFT syntax).")
    # -- data -----------------------------------------------------------------------------
    validation_fraction: float = option(0.2, "Share of the questions held out (all of a question's rationales "
                                          "go to one side), at least one question when there are two.")
    max_length: int = option(1024, "Prompt + rationale tokens; sentences ending past this are not trained on.")
    # -- where it runs --------------------------------------------------------------------
    device: str = option("auto", DEVICE_HELP)
    dtype: DtypeName = option("auto", DTYPE_HELP)
    # -- logging ------------------------------------------------------------------------
    report_to: ReportTo = option("none", REPORT_TO_HELP)

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise TrainingError("validation_fraction must lie in [0, 1)")
        if self.batch_size < 1 or self.num_train_epochs < 0:
            raise TrainingError("batch_size must be at least 1 and num_train_epochs at least 0")
