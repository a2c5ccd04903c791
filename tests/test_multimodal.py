"""A vision-language student through every stage: a tiny random LLaVA (tests/multimodal_support.py)
on the project's synthetic shapes set."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlmodel import select

from ares_data.errors import ImageError
from ares_data.images import load_image
from ares_data.synthetic_shapes import DATASET, import_shapes, write_shapes
from ares_data.tables import EvalResult, ModelCheckpoint, Question, Rationale, Sentence
from ares_train.loading import load_student
from ares_train.vision import encode, is_processor, lora_targets, student_input

from multimodal_support import build_tiny_vlm


@pytest.fixture(scope="session")
def tiny_vlm_dir(tokenizer_dir, tmp_path_factory) -> Path:
    return build_tiny_vlm(tokenizer_dir, tmp_path_factory.mktemp("tiny-llava"))


def _solid(path: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 32), colour).save(path)
    return path


def test_the_synthetic_set_imports_with_hashed_images(store, tmp_path):
    result = import_shapes(store, tmp_path / "shapes", n=8)
    assert (result.new_questions, result.new_rationales) == (8, 8)
    with store.session() as session:
        questions = session.exec(select(Question).where(Question.dataset == DATASET)).all()
    assert {q.split for q in questions} == {"train", "test"}
    for q in questions:
        assert Path(q.image_path).is_file() and load_image(q.image_path, q.image_sha256).sha256 == q.image_sha256
        assert q.hint == "" and q.answer_index is not None  # the answer is only in the image
    again = json.loads((tmp_path / "shapes" / f"{DATASET}.jsonl").read_text().splitlines()[3])
    assert again == json.loads(write_shapes(tmp_path / "again", n=8).read_text().splitlines()[3])  # seeded


def test_an_image_that_changed_since_import_is_refused(tmp_path):
    image = _solid(tmp_path / "a.png", (255, 0, 0))
    digest = load_image(image).sha256
    assert load_image(tmp_path / "missing.png", digest) is None  # a missing file means text only
    _solid(image, (0, 0, 255))
    with pytest.raises(ImageError, match="changed since import"):
        load_image(image, digest)


def test_the_image_reaches_the_model(tiny_vlm_dir, tmp_path):
    model, processor = load_student(str(tiny_vlm_dir))
    assert is_processor(processor) and type(model).__name__ == "LlavaForConditionalGeneration"
    logits = []
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        question = {"image": str(_solid(tmp_path / f"{name}.png", colour))}
        prompt, image = student_input(processor, "What colour is it?", question)
        assert image is not None and "<image>" in prompt
        enc = encode(processor, [prompt], [image], return_tensors="pt")
        assert enc["input_ids"].shape[1] > 16 and "pixel_values" in enc  # 16 image tokens after expansion
        with torch.no_grad():
            logits.append(model(**enc).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1])
    prompt, image = student_input(processor, "What colour is it?", {"image": str(tmp_path / "gone.png")})
    assert image is None and "<image>" not in prompt


def test_lora_targets_the_language_model_unless_asked(tiny_vlm_dir, tiny_model_dir):
    model, _ = load_student(str(tiny_vlm_dir))
    targets = lora_targets(model, "all-linear", lora_vision=False)
    assert targets and all("language_model" in t for t in targets)
    assert lora_targets(model, "all-linear", lora_vision=True) == "all-linear"
    assert lora_targets(model, ["q_proj"], lora_vision=False) == ["q_proj"]
    text_model, _ = load_student(str(tiny_model_dir))
    assert lora_targets(text_model, "all-linear", lora_vision=False) == "all-linear"  # text path unchanged


def _lora_keys(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(Path(adapter_dir) / "adapter_model.safetensors")


@pytest.mark.slow
def test_generate_export_train_and_eval_a_vlm_through_the_cli(cli, store, feedback, tiny_vlm_dir, tmp_path):
    shapes = tmp_path / "shapes"
    result = cli("import", "synthetic-shapes", "--out", shapes, "--n", "8")
    assert result.exit_code == 0, result.output
    with store.session() as session:
        train = session.exec(select(Question).where(Question.split == "train").order_by(Question.id)).all()
    Path(train[-1].image_path).unlink()  # one question lost its image: it still runs, text only
    model = str(tiny_vlm_dir)
    result = cli("generate", "--model", model, "--round", "1", "--k", "1", "--max-new-tokens", "10", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "1 of them without an image" in result.stdout

    with store.session() as session:
        rollouts = session.exec(select(Rationale).where(Rationale.source == "student")).all()
        counts = {r.id: len(session.exec(select(Sentence).where(Sentence.rationale_id == r.id)).all())
                  for r in rollouts}
    assert len(rollouts) == len(train)
    for r in rollouts:
        feedback.score(r, [0.9] * counts[r.id])
    shard = tmp_path / "rl-shard"
    assert cli("export", "rl", "--round", "1", "--out", shard).exit_code == 0
    result = cli("train", "rl", "--round", "1", "--model", model, "--shard", shard, "--batch-size", "4",
                 "--epochs", "1", "--lr", "1e-2")
    assert result.exit_code == 0, result.output
    with store.session() as session:
        rl = session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == "round-1-rl")).one()
    weights = _lora_keys(rl.adapter_path)
    assert sum(float(w.abs().sum()) for k, w in weights.items() if "lora_B" in k) > 0  # the adapter moved
    assert all("language_model" in k for k in weights)  # the vision tower kept its weights

    for r in rollouts[:3]:
        q = next(q for q in train if q.id == r.question_id)
        feedback.correct(r, f"The shape is {q.choices[q.answer_index]}. The answer is ({'ABCD'[q.answer_index]}).")
    result = cli("train", "sft", "--round", "1", "--epochs", "2", "--lr", "1e-2", "--lora-vision")
    assert result.exit_code == 0, result.output
    with store.session() as session:
        sft = session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == "round-1-sft")).one()
    weights = _lora_keys(sft.adapter_path)
    assert sum(float(w.abs().sum()) for k, w in weights.items() if "lora_B" in k) > 0
    assert any("vision_tower" in k for k in weights)  # --lora-vision: the vision tower got LoRA too

    result = cli("eval", "accuracy", "--checkpoint", "round-1-sft", "--split", "test", "--max-new-tokens", "8")
    assert result.exit_code == 0, result.output
    with store.session() as session:
        evaluated = session.exec(select(EvalResult).where(EvalResult.model_checkpoint_id == sft.id)).all()
    assert len(evaluated) == 2  # every 4th of 8 questions is in the test split
