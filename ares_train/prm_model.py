"""The process reward model: a causal-LM backbone (with a LoRA adapter) and a scalar head read at
the token where each sentence of a rationale ends.

Input: the student's prompt (the backbone's chat template when it has one) followed by the
rationale, tokenised as PPO tokenises them (prompt, then response with character offsets), so
a sentence's score sits on the token holding its last character (`sentence_tokens.py`).
Output: `sigmoid(head(h_t))` in [0, 1] at each sentence end: a regression onto the teacher's
score (mean squared error), served rounded to the teacher's 0.1 grid.

A trained PRM directory holds the PEFT adapter, the head (`prm_head.safetensors`) and
`prm.json` (its settings and the teacher it learned from). `PRMScorer` loads a registered PRM
(its base chain merged, then its adapter) and scores rationales in batches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ares_data.errors import TrainingError

from .prompting import format_prompt
from .sentence_tokens import tokenize_with_sentence_ends

HEAD_FILE = "prm_head.safetensors"
INFO_FILE = "prm.json"


@dataclass
class Encoded:
    """Token ids of prompt + rationale and the position of each sentence end (past `max_length`: dropped)."""

    ids: list[int]
    positions: list[int]
    dropped: int = 0


def encode(tokenizer: Any, prompt: str, text: str, ends: Sequence[int], max_length: int) -> Encoded:
    prompt_ids = tokenizer(format_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    response_ids, ends_at = tokenize_with_sentence_ends(tokenizer, text, ends)
    positions = [len(prompt_ids) + p for p in ends_at]
    kept = [p for p in positions if p < max_length]
    return Encoded((prompt_ids + response_ids)[:max_length], kept, len(positions) - len(kept))


class ScoreHead(torch.nn.Module):
    """Linear(hidden, 1) + sigmoid; starts at `prior` everywhere (zero weight), so training
    starts from the mean teacher score rather than a random guess."""

    def __init__(self, hidden: int, prior: float = 0.5):
        super().__init__()
        self.linear = torch.nn.Linear(hidden, 1)
        torch.nn.init.zeros_(self.linear.weight)
        p = min(max(prior, 1e-3), 1 - 1e-3)
        torch.nn.init.constant_(self.linear.bias, float(torch.logit(torch.tensor(p))))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(hidden.float()).squeeze(-1))


def decoder_of(lm: Any) -> Any:
    """The transformer under the LM head: the PRM needs hidden states, never vocabulary logits."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base.get_decoder()


def hidden_size(lm: Any) -> int:
    config = lm.config
    return getattr(config, "hidden_size", None) or config.get_text_config().hidden_size


def predict(decoder: Any, head: ScoreHead, batch: Sequence[Encoded], pad_id: int, device: Any) -> list[torch.Tensor]:
    """One forward pass over `batch` (right-padded): the head's scores at each row's sentence ends."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        ids[row, :len(e.ids)] = torch.tensor(e.ids)
        mask[row, :len(e.ids)] = 1
    hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    rows = torch.tensor([row for row, e in enumerate(batch) for _ in e.positions], dtype=torch.long, device=device)
    cols = torch.tensor([p for e in batch for p in e.positions], dtype=torch.long, device=device)
    flat = head(hidden[rows, cols])
    return list(flat.split([len(e.positions) for e in batch]))


def on_grid(score: float) -> float:
    return round(min(max(score, 0.0), 1.0) * 10) / 10


def save_prm(lm: Any, head: ScoreHead, output: Path, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    lm.save_pretrained(str(output))
    save_file({k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}, str(output / HEAD_FILE))
    (output / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")


class PRMScorer:
    """A trained PRM, loaded once, scoring (prompt, rationale, sentence ends) items in batches."""

    def __init__(self, lm: Any, tokenizer: Any, head: ScoreHead, info: dict[str, Any], device: torch.device):
        self.decoder, self.tokenizer, self.head, self.info, self.device = decoder_of(lm), tokenizer, head, info, device
        self.max_length = int(info.get("max_length", 1024))
        self.batch_size = int(info.get("batch_size", 8))

    @classmethod
    def load(cls, base_lm: Any, tokenizer: Any, directory: str | Path) -> "PRMScorer":
        """`base_lm` is the model the PRM was trained on (its checkpoint chain merged), already
        on the device and in the dtype the PRM runs with."""
        from peft import PeftModel
        from safetensors.torch import load_file

        from .placement import placement_of

        directory = Path(directory)
        if not (directory / HEAD_FILE).is_file():
            raise TrainingError(f"{directory} is not a PRM directory (no {HEAD_FILE})")
        place = torch.device(placement_of(base_lm).device)
        lm = PeftModel.from_pretrained(base_lm, str(directory)).merge_and_unload().eval()
        head = ScoreHead(hidden_size(lm))
        head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        info = json.loads((directory / INFO_FILE).read_text())
        return cls(lm, tokenizer, head.to(place).eval(), info, place)

    def tokens(self, prompt: str, text: str, ends: Sequence[int]) -> Encoded:
        return encode(self.tokenizer, prompt, text, ends, self.max_length)

    @torch.inference_mode()
    def score(self, items: Sequence[Encoded]) -> list[list[float]]:
        """Raw scores in [0, 1] per item, one per kept sentence end, `batch_size` items per pass."""
        out: list[list[float]] = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            out += [t.tolist() for t in predict(self.decoder, self.head, chunk, self.tokenizer.pad_token_id,
                                                self.device)]
        return out
