"""Answers with definite content, in varied wording, for questions already understood.

Every answer starts with (or first names) the short answer: the first number in a
count answer is the count, the first colour word in a colour answer is the colour,
the first shape word of a shape answer is the shape, the first side word of a
position answer is the side, and existence answers start with "Yes" or "No".
Later evaluation relies on this, and so does our own end-to-end test.
"""

from __future__ import annotations

import random
from collections import Counter

from vinstruct.generate.scripted.language import capitalize, counted, join, number_word, pick, plural, with_article
from vinstruct.generate.scripted.scene import Scene, SceneObject, region_phrase


def inventory(objects: list[SceneObject]) -> str:
    """'two red circles and a blue star' (in order of first appearance)."""
    counts = Counter(o.name for o in objects)
    parts = [with_article(name) if n == 1 else f"{number_word(n)} {plural(name)}" for name, n in counts.items()]
    return join(parts)


def there_is(objects: list[SceneObject]) -> str:
    """'There is a red circle' / 'There are two red circles and a star'."""
    # English agrees with the first item listed: "there is a circle and two stars".
    verb = "is" if sum(o.name == objects[0].name for o in objects) == 1 else "are"
    return f"There {verb} {inventory(objects)}"


def describe_target(color: str | None, noun: str | None, collective: str) -> str:
    """The phrase for what a question asks about: 'red circle', 'circle', 'red shape', 'shape'."""
    return " ".join(w for w in (color, noun or collective) if w)


def answer_count(scene: Scene, rng: random.Random, color: str | None = None, noun: str | None = None) -> str:
    matches = scene.matching(color=color, noun=noun)
    what = describe_target(color, noun, scene.collective)
    n = len(matches)
    if n == 0:
        return pick(rng, ["There are 0 {p} in the image.", "0. There are no {p} in this image."], p=plural(what))
    listing = inventory(matches)
    if n == 1:
        return pick(rng, ["There is 1 {w}: {l}, {r}.", "There is only 1 {w} in the image, {r}.", "1. There is just one {w}."],
                    w=what, l=listing, r=region_phrase(matches[0]) if scene.has_boxes else "in the image")
    if noun is None or color is None:
        return pick(rng, ["There are {c}: {l}.", "There are {c} in the image: {l}.", "{c}: {l}.", "I can count {c}: {l}."],
                    c=counted(n, what), l=listing)
    return pick(rng, ["There are {c}.", "There are {c} in the image.", "{c}."], c=counted(n, what))


def answer_color(scene: Scene, rng: random.Random, objects: list[SceneObject], ref: str) -> str:
    colors = list(dict.fromkeys(o.color for o in objects))
    if len(objects) == 1:
        where = region_phrase(objects[0]) if scene.has_boxes else ""
        options = ["{R} is {c}.", "It is {c}.", "{C}. {R} is {w}." if where else "{C}.", "{R} is {c} in color."]
        return pick(rng, options, R=capitalize(ref), c=colors[0], C=capitalize(colors[0]), w=where)
    if len(colors) == 1:
        both = "both" if len(objects) == 2 else "all"
        return pick(rng, ["They are {b} {c}.", "{C}. The {n} {p} are {b} {c}."], b=both, c=colors[0], C=capitalize(colors[0]),
                    n=number_word(len(objects)), p=plural(objects[0].noun))
    parts = [f"{with_article(o.name)} {region_phrase(o)}" for o in objects] if scene.has_boxes else [with_article(o.name) for o in objects]
    return f"There are {counted(len(objects), objects[0].noun, digits=False)} with different colors: {join(parts)}."


def answer_shape(scene: Scene, rng: random.Random, objects: list[SceneObject], ref: str) -> str:
    nouns = list(dict.fromkeys(o.noun for o in objects))
    if len(objects) == 1:
        return pick(rng, ["{R} is {a}.", "It is {a}.", "It's {a}, {w}.", "{A}."], R=capitalize(ref),
                    a=with_article(nouns[0]), A=capitalize(with_article(nouns[0])), w=region_phrase(objects[0]))
    if len(nouns) == 1:
        return f"They are {plural(nouns[0])}: {inventory(objects)}."
    return f"They have different shapes: {inventory(objects)}."


def answer_side(scene: Scene, rng: random.Random, obj: SceneObject, ref: str) -> str:
    side = obj.side
    return pick(rng, ["{R} is on the {s}.", "It is on the {s} side of the image.", "{S}. {R} is on the {s} side.",
                      "On the {s}."], R=capitalize(ref), s=side, S=capitalize(side))


def answer_level(scene: Scene, rng: random.Random, obj: SceneObject, ref: str) -> str:
    level = obj.level
    return pick(rng, ["{R} is at the {l}.", "It is near the {l} of the image.", "{L}. {R} is in the {h} half of the picture.",
                      "At the {l}."], R=capitalize(ref), l=level, L=capitalize(level),
                h="upper" if level == "top" else "lower")


def answer_where(scene: Scene, rng: random.Random, obj: SceneObject, ref: str) -> str:
    return pick(rng, ["{R} is {w}.", "It is {w} of the image.", "You can find it {w}."], R=capitalize(ref),
                w=region_phrase(obj))


def answer_exists(scene: Scene, rng: random.Random, color: str | None, noun: str | None) -> str:
    """Yes/No about '<color> <noun>' (either may be None), with a useful detail after."""
    what = describe_target(color, noun, scene.collective)
    matches = scene.matching(color=color, noun=noun)
    if matches:
        if len(matches) == 1:
            where = region_phrase(matches[0]) if scene.has_boxes else "in the image"
            return pick(rng, ["Yes, there is {a} {w}.", "Yes. {A} is {w}.", "Yes, there is one: {a} {w}."],
                        a=with_article(matches[0].name), A=capitalize(with_article(matches[0].name)), w=where)
        return pick(rng, ["Yes, there are {c}.", "Yes. I can see {c}: {l}."], c=counted(len(matches), what), l=inventory(matches))
    answer = pick(rng, ["No, there is no {w} in the image.", "No, there isn't {a}.", "No. There is no {w} here."],
                  w=what, a=with_article(what))
    same_noun = scene.matching(noun=noun) if noun else []
    same_color = scene.matching(color=color) if color else []
    if color and same_noun:
        answer += f" {there_is(same_noun)}, though."
    elif noun and same_color:
        answer += f" {there_is(same_color)} instead."
    elif scene.objects:
        answer += f" The image shows {inventory(scene.objects)}."
    return answer


def answer_relation_side(scene: Scene, rng: random.Random, a: SceneObject, b: SceneObject, ref_a: str, ref_b: str) -> str:
    """'Is A to the left or the right of B?' (the caller makes sure they differ clearly in x)."""
    side = "left" if a.cx < b.cx else "right"
    return pick(rng, ["{A} is to the {s} of {b}.", "To the {s}. {A} is to the {s} of {b}.", "It is to the {s} of {b}."],
                A=capitalize(ref_a), s=side, b=ref_b)


def answer_extreme(scene: Scene, rng: random.Random, obj: SceneObject, word: str) -> str:
    """'Which shape is the largest?' -> 'The blue star is the largest shape.'"""
    return pick(rng, ["The {n} is the {x} {c}.", "The {n}, {w}.", "The {x} one is the {n}."],
                n=obj.name, x=word, c=scene.collective, w=region_phrase(obj))


def overview(scene: Scene, rng: random.Random) -> str:
    if not scene.has_boxes:
        caption = scene.captions[0].rstrip(". ") if scene.captions else "nothing I can name"
        return pick(rng, ["The image shows {c}.", "It shows {c}."], c=caption[:1].lower() + caption[1:])
    background = scene.background()
    on = f" on {with_article(background)} background" if background else ""
    return pick(rng, ["The image shows {c}{b}: {l}.", "I can see {c}{b}: {l}.", "There are {c}{b}: {l}."],
                c=counted(len(scene.objects), scene.collective), b=on, l=inventory(scene.objects))
