"""Vision-language students through every stage: a tiny random model of each family
(LLaVA, Qwen2-VL, Idefics3/SmolVLM, LLaVA-OneVision; tests/multimodal_support.py) on the
project's synthetic shapes set."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file
from sqlmodel import select

from ares_data.errors import ImageError, TrainingError
from ares_data.images import load_image
from ares_data.tables import EvalResult, ModelCheckpoint, Question, Rationale, Sentence, TrainingRun
from ares_data.synthetic_shapes import DATASET, import_shapes, write_shapes
from ares_train.loading import load_student
from ares_train.vision import (VISION_PARTS, concat_images, encode, image_prompt, image_tensors, is_processor,
                               lora_targets, model_positions, student_input)

from multimodal_support import BUILDERS, FAMILIES

CLASSES = {"llava": "LlavaForConditionalGeneration", "qwen2_vl": "Qwen2VLForConditionalGeneration",
           "idefics3": "Idefics3ForConditionalGeneration", "llava_onevision": "LlavaOnevisionForConditionalGeneration"}


@pytest.fixture(scope="session")
def vlm_dir(tokenizer_dir, tmp_path_factory):
    """family -> its tiny student's directory, built on first use."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = BUILDERS[family](tokenizer_dir, tmp_path_factory.mktemp(f"tiny-{family}"))
        return built[family]

    return get


@pytest.fixture(scope="session")
def tiny_vlm_dir(vlm_dir) -> Path:
    return vlm_dir("llava")


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


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_reloads_and_the_image_reaches_the_model(family, vlm_dir, tmp_path):
    model, processor = load_student(str(vlm_dir(family)))  # AutoModelForImageTextToText + AutoProcessor
    assert is_processor(processor) and type(model).__name__ == CLASSES[family]
    logits = []
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        question = {"image": str(_solid(tmp_path / f"{name}.png", colour))}
        prompt, image = student_input(processor, "What colour is it?", question)
        assert image is not None and processor.image_token in prompt
        enc = encode(processor, [prompt], [image], return_tensors="pt")
        assert (enc["input_ids"] == processor.image_token_id).sum() >= 4  # the image tokens, expanded
        assert "pixel_values" in image_tensors(enc)
        with torch.no_grad():
            logits.append(model(**enc).logits[0, -1])
    assert not torch.allclose(logits[0], logits[1])  # a red and a blue image give different logits
    prompt, image = student_input(processor, "What colour is it?", {"image": str(tmp_path / "gone.png")})
    assert image is None and processor.image_token not in prompt


def test_a_processor_that_needs_torchvision_says_so(vlm_dir, tmp_path):
    """A Qwen2-VL directory as published names Qwen2VLProcessor, which transformers builds with a
    video processor: without torchvision that is one clear line, not transformers' error."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        pytest.skip("torchvision is installed: the processor loads")
    published = shutil.copytree(vlm_dir("qwen2_vl"), tmp_path / "qwen2-vl")
    config = published / "processor_config.json"
    config.write_text(config.read_text().replace("ImageOnlyQwen2VLProcessor", "Qwen2VLProcessor"))
    with pytest.raises(TrainingError, match="needs torchvision"):
        load_student(str(published))


def test_a_smolvlm_on_transformers_5_10_without_torchvision_says_so(vlm_dir):
    """Transformers 5.10 files Idefics3's PIL image processor under torchvision; a fresh process
    (without the tests' registration of the real class) gets one clear line, not ImportError."""
    from transformers.models import idefics3
    from transformers.utils import is_torchvision_available

    if is_torchvision_available() or not getattr(idefics3.Idefics3ImageProcessorPil, "is_dummy", False):
        pytest.skip("Idefics3's image processor loads here")
    load = "import sys; from ares_train.loading import load_student; load_student(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", load, str(vlm_dir("idefics3"))], capture_output=True, text=True)
    assert result.returncode != 0 and "TrainingError" in result.stderr and "needs torchvision" in result.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_training_positions_reproduce_what_generation_sampled(family, vlm_dir):
    """A mixed batch (two image sizes and a text-only row, left-padded): the forward PPO makes,
    with each prompt's own image tensors concatenated and the model's positions, gives the
    log-probs generation sampled with. Qwen2-VL's positions are 3-D (M-RoPE) and a 1-D count
    of attended tokens would not reproduce them."""
    from PIL import Image

    model, processor = load_student(str(vlm_dir(family)))
    model.eval()
    prompts = [image_prompt(processor, "Colour?"), image_prompt(processor, "What shape is it, then?"),
               student_input(processor, "Hi", None)[0]]
    images = [Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 48), (0, 0, 255)), None]
    enc = encode(processor, prompts, images, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**enc, max_new_tokens=6, do_sample=True, top_k=0, output_logits=True,
                         return_dict_in_generate=True, pad_token_id=processor.tokenizer.pad_token_id)
    plen = enc["input_ids"].shape[1]
    response = out.sequences[:, plen:]
    sampled = torch.stack(out.logits, 1).log_softmax(-1).gather(-1, response[..., None])[..., 0]

    attention = torch.cat([enc["attention_mask"], torch.ones_like(response)], 1)
    rows = [image_tensors(encode(processor, [p], [i], return_tensors="pt")) if i is not None else {}
            for p, i in zip(prompts, images)]
    image_inputs = concat_images(rows)  # one prompt at a time, as PPO encodes them
    counted = (attention.cumsum(-1) - 1).clamp(min=0)
    positions = model_positions(model, out.sequences, attention, image_inputs)
    assert (positions is None) == (family != "qwen2_vl")
    diffs = {}
    for name, pos in (("model", counted if positions is None else positions), ("counted", counted)):
        with torch.no_grad():
            logits = model(input_ids=out.sequences, attention_mask=attention, position_ids=pos, use_cache=False,
                           **image_inputs).logits[:, plen - 1:-1]
        diffs[name] = (logits.log_softmax(-1).gather(-1, response[..., None])[..., 0] - sampled).abs().max().item()
    assert diffs["model"] < 1e-4
    if family == "qwen2_vl":
        assert positions.shape == (3, *out.sequences.shape) and diffs["counted"] > 1e-2


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
@pytest.mark.parametrize("family", FAMILIES)
def test_generate_export_train_and_eval_each_family_through_the_cli(family, cli, store, feedback, vlm_dir, tmp_path):
    shapes = tmp_path / "shapes"
    result = cli("import", "synthetic-shapes", "--out", shapes, "--n", "8")
    assert result.exit_code == 0, result.output
    with store.session() as session:
        train = session.exec(select(Question).where(Question.split == "train").order_by(Question.id)).all()
    Path(train[-1].image_path).unlink()  # one question lost its image: it still runs, text only
    model = str(vlm_dir(family))
    result = cli("generate", "--model", model, "--round", "1", "--k", "1", "--max-new-tokens", "10", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "1 of them without an image" in result.stdout

    with store.session() as session:
        rollouts = session.exec(select(Rationale).where(Rationale.source == "student")).all()
        counts = {r.id: len(session.exec(select(Sentence).where(Sentence.rationale_id == r.id)).all())
                  for r in rollouts}
    assert len(rollouts) == len(train)
    for r in rollouts:  # what was sampled, kept for PPO
        assert len(r.generation["token_ids"]) == len(r.generation["logprobs"]) > 0
        assert r.generation["finish_reason"] in ("stop", "length")
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
    with store.session() as session:
        run = session.exec(select(TrainingRun).where(TrainingRun.kind == "rl")).one()
    # PPO's first forward (positions and image inputs included) reproduced what generation sampled
    assert run.metrics["rollout_probs_diff_max"] < 1e-3 and run.metrics["summary"]["rows_retokenised"] == 0
    assert not any(part in k for k in weights for part in VISION_PARTS)  # the image side kept its weights

    for r in rollouts[:3]:
        q = next(q for q in train if q.id == r.question_id)
        feedback.correct(r, f"The shape is {q.choices[q.answer_index]}. The answer is ({'ABCD'[q.answer_index]}).")
    result = cli("train", "sft", "--round", "1", "--epochs", "2", "--lr", "1e-2", "--lora-vision")
    assert result.exit_code == 0, result.output
    with store.session() as session:
        sft = session.exec(select(ModelCheckpoint).where(ModelCheckpoint.name == "round-1-sft")).one()
    weights = _lora_keys(sft.adapter_path)
    assert sum(float(w.abs().sum()) for k, w in weights.items() if "lora_B" in k) > 0
    # --lora-vision: the image side got LoRA too, and it moved: TRL's vision collator fed the pixels
    assert sum(float(w.abs().sum()) for k, w in weights.items()
               if "lora_B" in k and any(part in k for part in VISION_PARTS)) > 0

    result = cli("eval", "accuracy", "--checkpoint", "round-1-sft", "--split", "test", "--max-new-tokens", "8")
    assert result.exit_code == 0, result.output
    with store.session() as session:
        evaluated = session.exec(select(EvalResult).where(EvalResult.model_checkpoint_id == sft.id)).all()
    assert len(evaluated) == 2  # every 4th of 8 questions is in the test split


@pytest.mark.slow
def test_the_whole_loop_with_a_smolvlm_student_killed_after_rl_resumes(cli, store, db_path, vlm_dir, tmp_path):
    """`ares train` with an Idefics3 (SmolVLM) student and the fake teacher, killed once its RL
    stage is done; run again, it reuses what was done and trains SFT once."""
    from ares_data.fake_teacher import serve_in_thread
    from ares_data.tables import PipelineStage

    assert cli("import", "synthetic-shapes", "--out", tmp_path / "shapes", "--n", "4").exit_code == 0
    args = ["train", "--model", str(vlm_dir("idefics3")), "--rounds", "1", "--k", "2", "--limit", "2",
            "--max-new-tokens", "12", "--teacher-model", "fake-teacher", "--concurrency", "1", "--seed", "0"]

    def done(kind: str) -> int:
        with store.session() as session:
            return len(session.exec(select(TrainingRun).where(TrainingRun.kind == kind,
                                                              TrainingRun.status == "done")).all())

    # `ares`, loading the saved SmolVLM as this process does (transformers 5.10 needs the tests'
    # registration of Idefics3's image processor, see multimodal_support).
    ares = "from multimodal_support import idefics3_image_processor as i; i(); from ares_data.cli import main; main()"
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "ARES_DB": str(db_path), "ARES_HOME": str(tmp_path / "home"), "PYTHONPATH": path}
    with serve_in_thread(seed=1, latency_ms=300) as url:
        first = subprocess.Popen([sys.executable, "-c", ares, *args, "--base-url", url], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None and not done("rl"):
            time.sleep(0.05)
        assert first.poll() is None and done("rl") == 1, "the run ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert done("sft") == 0
        again = cli(*args, "--base-url", url)
        assert again.exit_code == 0, again.output
        stats = httpx.get(url.removesuffix("/v1") + "/stats").json()
    assert stats["answered_twice"] == 0  # no teacher request answered twice across the kill
    assert "round 1 generate: done before, reused" in again.output
    with store.session() as session:
        runs = session.exec(select(TrainingRun).order_by(TrainingRun.id)).all()
        stages = session.exec(select(PipelineStage)).all()
    assert [r.kind for r in runs] == ["rl", "sft"] and all(s.status == "done" for s in stages)  # RL not retrained


def test_online_generate_sees_the_image_and_step_trains_on_what_it_sampled(vlm_dir):
    """The PPO trainer's own `generate` with images (Qwen2-VL: 3-D positions), straight into
    `step`: its first forward, with each row's image, reproduces the sampled log-probs."""
    from PIL import Image

    from ares_data.splitter import split_sentences
    from ares_train.ppo_config import PPOConfig
    from ares_train.ppo_trainer import SentenceRewardPPOTrainer

    model, processor = load_student(str(vlm_dir("qwen2_vl")))
    trainer = SentenceRewardPPOTrainer(PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=1), model, processor)
    red, blue = Image.new("RGB", (32, 32), (255, 0, 0)), Image.new("RGB", (32, 48), (0, 0, 255))
    prompts = [image_prompt(processor, "Colour?"), image_prompt(processor, "Colour?"),
               student_input(processor, "Colour?", None)[0]]
    images = [red, blue, None]
    torch.manual_seed(0)
    sampled = trainer.generate(prompts, 12, images=images)
    assert [len(s.token_ids) for s in sampled] == [len(s.logprobs) for s in sampled]
    rows = [{"prompt": p, "image": i, "response": s.text, "sentence_ends": ends, "scores": [0.5] * len(ends),
             "temperature": 1.0, **s.record()}
            for p, i, s in zip(prompts, images, sampled) if (ends := [x.end for x in split_sentences(s.text)])]
    assert any(r["image"] is not None for r in rows)
    assert trainer.step(rows)["rollout_probs_diff_max"] < 1e-3
