"""Scripted conversations: varied questions with definite answers about one scene.

With boxes the teacher asks about counts, colours, shapes, left/right, top/bottom,
existence (including absent objects, answered "No"), relative positions and sizes.
With captions only it asks just what the captions state (from_captions.py).
Output format is the one the prompt files teach: "User: ..." / "Assistant: ..." lines.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from vinstruct.generate.scripted import facts
from vinstruct.generate.scripted.language import pick, plural, with_article
from vinstruct.generate.scripted.from_captions import conversation_from_captions
from vinstruct.generate.scripted.scene import Scene

CORE_SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond", "cross", "heart"]
CORE_COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "black", "gray", "brown"]
COMMON_OBJECTS = ["dog", "cat", "car", "person", "bicycle", "bus", "horse", "chair", "bird", "umbrella"]
QA = tuple[str, str]
# A maker returns (topic, question, answer) or None when the scene offers nothing to ask;
# a conversation asks about each topic once, however the question is worded.
Maker = Callable[[Scene, random.Random], "tuple[tuple, str, str] | None"]


def _collective(scene: Scene, rng: random.Random) -> str:
    """'shape' or 'object' for a shapes scene (users ask both ways), 'object' otherwise."""
    return rng.choice(["shape", "object"]) if scene.collective == "shape" else "object"


def _referable(scene: Scene, rng: random.Random):
    """(object, phrase) pairs for objects a question can name unambiguously."""
    pairs = []
    for obj in scene.objects:
        ref = scene.referent(obj)
        if ref:
            pairs.append((obj, ref.replace(f" {scene.collective}", f" {_collective(scene, rng)}")))
    return pairs


def ask_count_all(scene, rng):
    what = plural(scene.collective)
    question = pick(rng, ["How many {w} are there?", "How many {w} are in the image?", "How many {w} can you see?",
                          "Can you count the {w} in this picture?"], w=what)
    return ("count",), question, facts.answer_count(scene, rng)


def ask_count_some(scene, rng):
    if rng.random() < 0.5 or not any(o.color for o in scene.objects):
        noun = rng.choice(scene.nouns())
        question = pick(rng, ["How many {p} are there?", "How many {p} are in the picture?", "How many {p} do you see?"],
                        p=plural(noun))
        return ("count", noun), question, facts.answer_count(scene, rng, noun=noun)
    color = rng.choice(scene.colors())
    question = pick(rng, ["How many {c} {w} are there?", "How many {c} {w} can you see?"], c=color,
                    w=plural(_collective(scene, rng)))
    return ("count", color), question, facts.answer_count(scene, rng, color=color)


def ask_color(scene, rng):
    by_noun = [(o, r) for o, r in _referable(scene, rng) if r == f"the {o.noun}" and o.color]
    if by_noun:
        obj, ref = rng.choice(by_noun)
        question = pick(rng, ["What color is {r}?", "What is the color of {r}?", "Which color does {r} have?"], r=ref)
        return ("color", obj.index), question, facts.answer_color(scene, rng, [obj], ref)
    noun = rng.choice(scene.nouns())
    group = scene.matching(noun=noun)
    if len(group) > 1 and len({o.color for o in group}) == 1 and group[0].color:
        return ("color", noun), f"What color are the {plural(noun)}?", facts.answer_color(scene, rng, group, f"the {plural(noun)}")
    return None


def ask_shape(scene, rng):
    by_color = [(o, r) for o, r in _referable(scene, rng) if o.color and not r.endswith(f" {o.noun}")]
    if not by_color:
        return None
    obj, ref = rng.choice(by_color)
    question = pick(rng, ["What shape is {r}?", "What is the shape of {r}?", "Which shape is {r}?"], r=ref)
    return ("shape", obj.index), question, facts.answer_shape(scene, rng, [obj], ref)


def ask_side(scene, rng):
    clear = [(o, r) for o, r in _referable(scene, rng) if abs(o.cx - 0.5) >= 0.1]
    if not clear:
        return None
    obj, ref = rng.choice(clear)
    question = pick(rng, ["Is {r} on the left or the right?", "Is {r} on the left or right side of the image?",
                          "Which side of the image is {r} on?", "Is {r} on the right or the left?"], r=ref)
    return ("side", obj.index), question, facts.answer_side(scene, rng, obj, ref)


def ask_level(scene, rng):
    clear = [(o, r) for o, r in _referable(scene, rng) if abs(o.cy - 0.5) >= 0.1]
    if not clear:
        return None
    obj, ref = rng.choice(clear)
    question = pick(rng, ["Is {r} at the top or the bottom?", "Is {r} near the top or the bottom of the image?",
                          "Is {r} at the bottom or the top of the picture?"], r=ref)
    return ("level", obj.index), question, facts.answer_level(scene, rng, obj, ref)


def ask_exists(scene, rng):
    obj = rng.choice(scene.objects)
    name = obj.name
    if len(scene.matching(color=obj.color, noun=obj.noun)) > 1 and rng.random() < 0.5:
        question = pick(rng, ["Are there any {p} in the image?", "Are there {p} here?"], p=plural(name))
    else:
        question = pick(rng, ["Is there {a} in the image?", "Do you see {a}?", "Is there {a} in this picture?",
                              "Can you spot {a}?"], a=with_article(name))
    return ("exists", obj.color, obj.noun), question, facts.answer_exists(scene, rng, obj.color, obj.noun)


def ask_absent(scene, rng):
    """A question about something not in the scene, answered 'No' (often a near miss)."""
    present = {(o.color, o.noun) for o in scene.objects}
    if scene.collective != "shape":
        nouns = [n for n in COMMON_OBJECTS if n not in {o.noun for o in scene.objects}]
        noun = rng.choice(nouns)
        question = pick(rng, ["Is there {a} in the image?", "Do you see {a}?"], a=with_article(noun))
        return ("exists", None, noun), question, facts.answer_exists(scene, rng, None, noun)
    colors = list(dict.fromkeys(scene.colors() + CORE_COLORS))
    shapes = list(dict.fromkeys(scene.nouns() + CORE_SHAPES))
    if rng.random() < 0.25:
        missing = [s for s in shapes if not scene.matching(noun=s)]
        if missing:
            noun = rng.choice(missing)
            question = pick(rng, ["Is there {a} in the image?", "Are there any {p}?"], a=with_article(noun), p=plural(noun))
            return ("exists", None, noun), question, facts.answer_exists(scene, rng, None, noun)
    near = [(c, s) for c in scene.colors() for s in scene.nouns() if (c, s) not in present]
    far = [(c, s) for c in colors for s in shapes if (c, s) not in present]
    color, noun = rng.choice(near if near and rng.random() < 0.6 else far)
    question = pick(rng, ["Is there {a} in the image?", "Do you see {a}?", "Is there {a} in this picture?"],
                    a=with_article(f"{color} {noun}"))
    return ("exists", color, noun), question, facts.answer_exists(scene, rng, color, noun)


def ask_relation(scene, rng):
    pairs = _referable(scene, rng)
    options = [(a, b, ra, rb) for a, ra in pairs for b, rb in pairs if a is not b and abs(a.cx - b.cx) >= 0.15]
    if not options:
        return None
    a, b, ra, rb = rng.choice(options)
    question = pick(rng, ["Is {a} to the left or the right of {b}?", "Is {a} left or right of {b}?"], a=ra, b=rb)
    return ("relation", *sorted((a.index, b.index))), question, facts.answer_relation_side(scene, rng, a, b, ra, rb)


def ask_extreme(scene, rng):
    word, obj = ("largest", scene.largest()) if rng.random() < 0.6 else ("smallest", scene.smallest())
    if obj is None:
        return None
    question = pick(rng, ["Which {c} is the {x}?", "What is the {x} {c} in the image?"], c=_collective(scene, rng), x=word)
    return ("extreme", word), question, facts.answer_extreme(scene, rng, obj, word)


def ask_overview(scene, rng):
    question = pick(rng, ["What do you see in this image?", "What is shown in the picture?", "What does this image contain?"])
    return ("overview",), question, facts.overview(scene, rng)


# (maker, weight): counts, colours, shapes, sides and existence matter most to users of the data.
BOX_MAKERS: list[tuple[Maker, float]] = [
    (ask_count_all, 1.0), (ask_count_some, 1.0), (ask_color, 1.5), (ask_shape, 1.5), (ask_side, 1.2),
    (ask_level, 0.8), (ask_exists, 1.0), (ask_absent, 1.2), (ask_relation, 0.6), (ask_extreme, 0.5),
    (ask_overview, 0.4),
]


def write_conversation(scene: Scene, rng: random.Random, min_turns: int = 4, max_turns: int = 7) -> str:
    """A conversation in the prompt format; questions never repeat."""
    if scene.has_boxes:
        pairs: list[QA] = []
        topics: set[tuple] = set()
        target = rng.randint(min_turns, max_turns)
        makers, weights = [m for m, _ in BOX_MAKERS], [w for _, w in BOX_MAKERS]
        for _ in range(target * 6):
            if len(pairs) >= target:
                break
            made = rng.choices(makers, weights)[0](scene, rng)
            if made and made[0] not in topics:
                topics.add(made[0])
                pairs.append(made[1:])
    else:
        pairs = conversation_from_captions(scene, rng, max_turns)
    return "\n".join(f"User: {q}\nAssistant: {a}" for q, a in pairs)

