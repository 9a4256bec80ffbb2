"""ScienceQA-format multiple-choice problems about the world's scenes.

Writes problems.json, pid_splits.json and images/<split>/<pid>/image.png (a copy of the
scene) in ScienceQA's own schema, so the ScienceQA reader, the model and the judge
ensemble run on them unchanged. Kinds of problem (two per image: one with the image, one
without), with plausible subjects and grades:

  image    natural science   "What color is the <shape> in the picture?"          grades 1-3
  image    natural science   "How many shapes are in the picture?"                grades 1-2
  image    social science    "Which side of the picture is the <object> on?"      grades 2-5
  text     natural science   context "The picture shows: ..."; colour/shape/count  grades 3-8
  text     language science  context: a caption; "Which word in the sentence names a shape?"  grades 6-10
  none     language science  "Which word names a color?" / "... a shape?"          grades 1-3
The text and no-context kinds can be solved without the image; the image kinds cannot.

It is also the "scienceqa" suite's module: the suite runs on a --problems file or on these.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

from vinstruct.data.coco import CocoImage, CocoSet
from vinstruct.data.formats import write_json
from vinstruct.errors import VinstructError
from vinstruct.eval.scene import SceneObject, WorldInfo, objects_of_image, with_article


def _names_shape(word: str, world: WorldInfo) -> bool:
    return any(word in (shape, shape + "s", shape + "es") for shape in world.shapes)


def _options(answer: str, pool: list[str], rng: random.Random, n: int = 4) -> tuple[list[str], int]:
    others = [x for x in dict.fromkeys(pool) if x != answer]
    choices = rng.sample(others, min(n - 1, len(others))) + [answer]
    rng.shuffle(choices)
    return choices, choices.index(answer)


def _problem(question, choices, answer, hint, image, subject, topic, grade, solution):
    return {"question": question, "choices": choices, "answer": answer, "hint": hint, "image": image,
            "task": "closed choice", "grade": f"grade{grade}", "subject": subject, "topic": topic,
            "category": topic.title(), "skill": topic, "lecture": "", "solution": solution}


def _listing(objects: list[SceneObject]) -> str:
    names = [with_article(o.category) for o in objects]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"The picture shows: {listed}."


def image_problem(objects, world, rng) -> dict | None:
    kinds = ["count"]
    unique_shapes = [o for o in objects if sum(p.shape == o.shape for p in objects) == 1]
    if unique_shapes:
        kinds.append("color")
    sided = [o for o in objects if sum(p.category == o.category for p in objects) == 1 and o.side("x")]
    if sided:
        kinds.append("side")
    kind = rng.choice(kinds)
    if kind == "color":
        target = rng.choice(unique_shapes)
        choices, answer = _options(target.color, world.colors, rng)
        return _problem(f"What color is the {target.shape} in the picture?", choices, answer, "", "image.png",
                        "natural science", "colors", rng.randint(1, 3), f"The {target.shape} is {target.color}.")
    if kind == "side":
        target = rng.choice(sided)
        choices = ["left", "right"]
        return _problem(f"Which side of the picture is the {target.category} on?", choices,
                        choices.index(target.side("x")), "", "image.png", "social science", "directions",
                        rng.randint(2, 5), f"The {target.category} is on the {target.side('x')}.")
    count = str(len(objects))
    choices, answer = _options(count, [str(n) for n in range(1, 7)], rng)
    return _problem("How many shapes are in the picture?", sorted(choices), sorted(choices).index(count), "",
                    "image.png", "natural science", "counting", rng.randint(1, 2), f"There are {count} shapes.")


def text_problem(image: CocoImage, objects, world, rng) -> dict:
    kind = rng.choice(["listing", "caption", "word"])
    caption_shapes = [(c, w) for c in image.captions for w in re.findall(r"[a-z]+", c.lower())
                      if _names_shape(w, world)]
    if kind == "caption" and caption_shapes:
        caption, word = rng.choice(caption_shapes)
        others = [w for w in re.findall(r"[a-z]+", caption.lower())
                  if len(w) > 2 and not _names_shape(w, world) and w not in world.colors]
        choices, answer = _options(word, others or ["picture", "plain"], rng, 3)
        return _problem("Which word in the sentence names a shape?", choices, answer, f"Read the sentence: {caption}",
                        None, "language science", "word meaning", rng.randint(6, 10), f"'{word}' names a shape.")
    if kind == "word" or kind == "caption":
        wanted = rng.choice(["color", "shape"])
        pool, other = (world.colors, world.shapes) if wanted == "color" else (world.shapes, world.colors)
        answer_word = rng.choice(pool)
        choices = rng.sample(other, min(2, len(other))) + [answer_word]
        rng.shuffle(choices)
        return _problem(f"Which word names a {wanted}?", choices, choices.index(answer_word), "", None,
                        "language science", "word meaning", rng.randint(1, 3), f"'{answer_word}' names a {wanted}.")
    unique_colors = [o for o in objects if sum(p.color == o.color for p in objects) == 1]
    if unique_colors and rng.random() < 0.5:
        target = rng.choice(unique_colors)
        choices, answer = _options(target.shape, world.shapes, rng)
        question = f"Based on the context, what shape is the {target.color} object?"
        solution = f"The only {target.color} object listed is a {target.shape}."
    else:
        count = str(len(objects))
        choices, answer = _options(count, [str(n) for n in range(1, 7)], rng)
        question, solution = "Based on the context, how many objects does the picture show?", f"It lists {count}."
    return _problem(question, choices, answer, _listing(objects), None, "natural science", "reading data",
                    rng.randint(3, 8), solution)


def build_problems(world_dir: str | os.PathLike, split: str, out_dir: str | os.PathLike, seed: int = 0,
                   limit_images: int | None = None) -> tuple[Path, Path]:
    """Write out_dir/problems.json, out_dir/pid_splits.json and the images; returns the two JSON paths."""
    world = WorldInfo.load(world_dir)
    coco = CocoSet.load(world_dir, split)
    images = [img for img in coco.images if img.objects][:limit_images] if limit_images else \
        [img for img in coco.images if img.objects]
    if not images:
        raise VinstructError(f"{world_dir}: split {split!r} has no annotated scenes")
    out_dir = Path(out_dir)
    problems, pids = {}, []
    for image in images:
        rng = random.Random(f"{seed}-sqa-{image.id}")
        objects = objects_of_image(image)
        for problem in (image_problem(objects, world, rng), text_problem(image, objects, world, rng)):
            pid = str(len(problems) + 1)
            problem["split"] = split
            problems[pid] = problem
            pids.append(pid)
            if problem["image"]:
                if not image.path.is_file():
                    raise VinstructError(f"{image.path}: image of scene {image.id} not found")
                target = out_dir / "images" / split / pid / problem["image"]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image.path, target)
    write_json(out_dir / "problems.json", problems)
    write_json(out_dir / "pid_splits.json", {name: (pids if name == split else []) for name in ("train", "val", split)})
    return out_dir / "problems.json", out_dir / "pid_splits.json"


def training_samples(world_dir: str | os.PathLike, split: str = "train", seed: int = 0,
                     per_image: int = 2) -> list[dict]:
    """LLaVA samples that teach the ScienceQA answer format on a split's scenes.

    The paper fine-tunes its ScienceQA model on ScienceQA's train split; this is the world's
    equivalent: the evaluation's own prompt (context, question, lettered options, the answer
    instruction) as the human turn, "<letter>." as the reply. Image paths are relative to the
    world directory (images/<split>/<file>), so the world is the training image_dir. With
    per_image=1, scenes alternate between the image kind and the text kind.
    """
    if per_image not in (1, 2):
        raise VinstructError(f"per_image must be 1 or 2, got {per_image}")
    from vinstruct.eval.scienceqa import Problem, prompt

    world = WorldInfo.load(world_dir)
    root = Path(world_dir)
    samples = []
    for image in CocoSet.load(world_dir, split).images:
        if not image.objects:
            continue
        rng = random.Random(f"{seed}-sqa-train-{image.id}")
        objects = objects_of_image(image)
        problems = (("image", image_problem(objects, world, rng)), ("text", text_problem(image, objects, world, rng)))
        if per_image == 1:
            problems = (problems[len(samples) % 2],)
        for kind, raw in problems:
            if raw is None:
                continue
            problem = Problem(f"{image.id}-{kind}", raw["question"], raw["choices"], raw["answer"], raw["hint"],
                              raw["image"], raw["subject"], raw["grade"])
            text = prompt(problem)
            sample = {"id": f"sqa-{problem.pid}", "conversations": [
                {"from": "human", "value": f"<image>\n{text}" if problem.image else text},
                {"from": "gpt", "value": f"{problem.answer_letter}."}]}
            if problem.image:
                sample["image"] = Path(os.path.relpath(image.path, root)).as_posix()
            samples.append(sample)
    return samples


# ---- the "scienceqa" suite (vinstruct.eval.suites) -----------------------------------------------
def evaluate_suite(model, out: Path, request) -> dict:
    """On --problems (the ScienceQA schema), or on problems generated from --world's scenes."""
    from vinstruct.eval.scienceqa import evaluate

    problems, pid_splits, image_root, limit = request.problems, request.pid_splits, request.image_root, request.limit
    if problems is None:
        if request.world_dir is None:
            raise VinstructError("suite 'scienceqa' needs --problems FILE (or --world DIR to generate problems)")
        problems, pid_splits = build_problems(request.world_dir, request.split, out / "problems", request.seed, limit)
        image_root = image_root or out / "problems" / "images" / request.split
        limit = None
    return evaluate(model, problems, out, pid_splits=pid_splits, split=request.split, image_root=image_root,
                    judge=request.judge if request.use_judge else None, limit=limit,
                    option_text=request.option_text, **request.generation_options())


def suite_questions(out: Path, request) -> list[Path]:
    return list(build_problems(request.world_dir, request.split, out, request.seed, request.limit))
