"""A small multimodal example set the project draws itself: one coloured shape per PNG.

Each image asks either the shape's colour or its kind; the answer is only in the pixels
(the text gives no hint), so a student that answers above chance reads the image. Written
as `shapes.jsonl` + `images/*.png` in the `ares import jsonl` format, with a gold rationale
per question. PIL (pillow) is imported when the set is drawn.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from .formatting import answer_sentence
from .importers import import_jsonl
from .importers._common import ImportResult
from .store import Store

DATASET = "synthetic_shapes"
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (230, 200, 20)}
SHAPES = ("circle", "square", "triangle")


def _draw(path: Path, shape: str, colour: str, size: int, rng: random.Random) -> None:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    margin = rng.randint(size // 10, size // 5)
    box = (margin, margin, size - margin, size - margin)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(size // 2, margin), (size - margin, size - margin), (margin, size - margin)], fill=fill)
    image.save(path)


def _record(n: int, shape: str, colour: str, asks_colour: bool, split: str) -> dict:
    if asks_colour:
        choices, answer = list(COLOURS), list(COLOURS).index(colour)
        question, fact = "What colour is the shape in the image?", f"The shape is filled with {colour}."
    else:
        choices, answer = list(SHAPES), SHAPES.index(shape)
        question, fact = "Which shape is drawn in the image?", f"The outline of the shape is a {shape}."
    rationale = f"The image shows a {colour} {shape} on a white background. {fact} {answer_sentence(answer)}"
    return {"id": f"shape-{n}", "question": question, "choices": choices, "answer": answer,
            "image": f"images/shape-{n}.png", "rationale": rationale, "split": split, "subject": "synthetic shapes"}


def write_shapes(out_dir: str | Path, n: int = 24, *, seed: int = 0, size: int = 32,
                 test_every: int = 4) -> Path:
    """Draw `n` questions into `out_dir` (every `test_every`-th in the test split); the JSONL path."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    records = []
    for i in range(n):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        record = _record(i, shape, colour, asks_colour=i % 2 == 0, split="test" if i % test_every == 0 else "train")
        _draw(out / record["image"], shape, colour, size, rng)
        records.append(record)
    jsonl = out / f"{DATASET}.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return jsonl


def import_shapes(store: Store, out_dir: str | Path, n: int = 24, *, seed: int = 0) -> ImportResult:
    """Draw the set into `out_dir` and import it as dataset `synthetic_shapes`."""
    return import_jsonl(store, write_shapes(out_dir, n, seed=seed), dataset=DATASET)
