"""Small files in the exact formats of the ScienceQA and A-OKVQA releases, written by the tests.

A clone without `../shared/data` still runs the importer, splitter and reward tests on these;
the real samples there, when present, are an extra check of the same tests. The texts are made
up here (nothing is copied from the datasets); the shapes follow the official files: ScienceQA's
`problems.json` ({pid: problem}), `pid_splits.json` ({split: [pid]} with trainval and mini*
lists), `captions.json` (captions nested under "captions"), and A-OKVQA's list of questions.
"""

from __future__ import annotations

import json
from pathlib import Path

SPLITS = ("train", "val", "test")
TOPICS = [("natural science", "physics", "Velocity, acceleration, and forces", "Compare magnitudes of forces"),
          ("social science", "geography", "Geography", "Read a map: cardinal directions"),
          ("language science", "writing-strategies", "Sentences", "Identify run-on sentences")]
PROBLEMS = 30  # ten per split; two in three have an image and a caption; the last has no gold text


def _problem(i: int) -> dict:
    subject, topic, category, skill = TOPICS[i % len(TOPICS)]
    answer = i % 3
    choices = [f"{i + k} newtons" for k in range(3)]
    last = i == PROBLEMS
    return {
        "question": f"Which force is the strongest in experiment {i}?",
        "choices": choices,
        "answer": answer,
        "hint": f"Experiment {i} pulls a cart." if i % 4 == 0 else "",
        "image": None if i % 3 == 0 else "image.png",
        "task": "closed choice",
        "grade": f"grade{3 + i % 6}",
        "subject": subject,
        "topic": topic,
        "category": category,
        "skill": skill,
        "lecture": "" if last else (f"A force is a push or a pull. Forces are measured in newtons (N).\n"
                                    f"A larger force changes the motion of cart {i} more."),
        "solution": "" if last else (f"Look at each force. The strongest is {choices[answer]}. "
                                     f"So the answer is {choices[answer]}."),
        "split": SPLITS[(i - 1) // (PROBLEMS // 3)],
    }


def write_scienceqa(root: Path) -> dict[str, Path]:
    """problems.json, pid_splits.json (train/val/test only), pid_splits.full.json, captions.json."""
    root.mkdir(parents=True, exist_ok=True)
    problems = {str(i): _problem(i) for i in range(1, PROBLEMS + 1)}
    by_split = {split: [pid for pid, p in problems.items() if p["split"] == split] for split in SPLITS}
    full = {**by_split, "trainval": by_split["train"] + by_split["val"],
            **{f"mini{split}": pids[: len(pids) // 2] for split, pids in by_split.items()}}
    captions = {pid: f"A photo of cart {pid} on a track." for pid, p in problems.items() if p["image"]}
    paths = {"problems": root / "problems.json", "splits": root / "pid_splits.json",
             "full_splits": root / "pid_splits.full.json", "captions": root / "captions.json"}
    paths["problems"].write_text(json.dumps(problems, indent=1))
    paths["splits"].write_text(json.dumps(by_split))
    paths["full_splits"].write_text(json.dumps(full))
    paths["captions"].write_text(json.dumps({"model": "made-up", "max_length": 16, "num_beams": 4,
                                             "captions": captions}))
    return paths


def write_aokvqa(path: Path, questions: int = 12) -> Path:
    """An aokvqa_v1p0_val.json: a list of questions, each with four choices and three rationales."""
    items = []
    for i in range(questions):
        choices = ["red", "blue", "green", "yellow"]
        answer = i % 4
        items.append({
            "split": "val", "image_id": 1000 + 7 * i, "question_id": f"gen{i:04d}AOKVQAsample",
            "question": f"What color is the umbrella in picture {i}?", "choices": choices,
            "correct_choice_idx": answer, "direct_answers": [choices[answer]] * 10,
            "difficult_direct_answer": i % 5 == 0,
            "rationales": [f"The umbrella is {choices[answer]}.", f"Picture {i} shows a {choices[answer]} umbrella.",
                           f"It is {choices[answer]}. The sky is grey."],
        })
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(items))
    return path
