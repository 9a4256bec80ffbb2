"""Five COCO-style captions per scene.

Like COCO's, they describe the picture in a sentence each, in varied words, and
do not all mention everything. Two of them are complete, and always come first:
  0  an inventory: every object, counted, with its colour and shape ("Two red circles and a small blue star.")
  1  a layout: every object with where it is ("A red circle in the top left corner and a blue star on the right.")
The other three are partial: a relation between two objects, the most salient
object, or the number of shapes with one of them named. Every caption names
shapes, because an encoder trained on them must tell shapes apart.
"""

from __future__ import annotations

import numpy as np

from vinstruct.world.describe import (ObjectView, article, count_word, group, join, location, noun, plural, relation,
                                      sentence)

CAPTIONS_PER_IMAGE = 5

_INVENTORY_LEADS = ("", "there are ", "a picture of ", "an image with ", "a drawing of ", "{n} shapes: ")
_BACKDROPS = ("", "", " on a {tone} background", " against a {tone} backdrop")
_SHAPE_WORDS = ("shapes", "objects", "figures")


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def inventory_caption(objects: list[ObjectView], tone: str, rng: np.random.Generator) -> str:
    phrases = []
    for members in group(objects):
        same_size = len({m.size for m in members}) == 1
        phrases.append(noun(members[0], with_size=same_size and rng.uniform() < 0.5, number=len(members)))
    lead = _pick(rng, _INVENTORY_LEADS if len(objects) > 1 else _INVENTORY_LEADS[:5])
    if lead == "there are " and phrases[0].startswith(("a ", "an ")):
        lead = "there is "  # agreement with the first noun, as people write it
    text = lead.format(n=count_word(len(objects))) + join(phrases) + _pick(rng, _BACKDROPS).format(tone=tone)
    return sentence(text)


def layout_caption(objects: list[ObjectView], image_size: int, rng: np.random.Generator) -> str:
    variant = int(rng.integers(2))
    parts = [f"{noun(o, with_size=rng.uniform() < 0.4)} {location(o, image_size, variant)}" for o in objects]
    return sentence(join(parts))


def relation_caption(objects: list[ObjectView], image_size: int, tone: str, rng: np.random.Generator) -> str:
    pairs = [(a, b, relation(a, b, image_size)) for a in objects for b in objects if a is not b]
    pairs = [p for p in pairs if p[2] is not None]
    if not pairs:
        obj = objects[int(rng.integers(len(objects)))]
        lead = _pick(rng, ("", "a view of ", "there is "))
        return sentence(f"{lead}{noun(obj, with_size=True)} {location(obj, image_size)} on a {tone} background")
    a, b, rel = pairs[int(rng.integers(len(pairs)))]
    return sentence(f"{noun(a, with_size=rng.uniform() < 0.5)} {rel} {noun(b, with_size=rng.uniform() < 0.5)}")


def salient_caption(objects: list[ObjectView], tone: str, rng: np.random.Generator) -> str:
    biggest = max(objects, key=lambda o: o.extent)
    others = len(objects) - 1
    if others == 0:
        return sentence(f"{noun(biggest, with_size=True)} alone on a {tone} background")
    rest = f"{count_word(others)} other {'shape' if others == 1 else _pick(rng, _SHAPE_WORDS)}"
    style = int(rng.integers(3))
    if style == 0 or (style == 1 and others == 1):
        return sentence(f"{noun(biggest, with_size=True)} and {rest}")
    if style == 1:
        return sentence(f"{noun(biggest, with_size=True)} stands out among {rest}")
    return sentence(f"{noun(biggest)} next to {noun(objects[0] if objects[0] is not biggest else objects[-1])}")


def count_caption(objects: list[ObjectView], tone: str, rng: np.random.Generator) -> str:
    n = len(objects)
    named = objects[int(rng.integers(n))]
    if n == 1:
        return sentence(f"a single {named.color} {named.shape} on a {tone} surface")
    word = _pick(rng, _SHAPE_WORDS)
    style = int(rng.integers(3))
    if style == 0:
        return sentence(f"{count_word(n)} {word}, one of them {noun(named)}")
    if style == 1:
        return sentence(f"{count_word(n)} {word} including {noun(named)}")
    by_shape: dict[str, int] = {}
    for obj in objects:
        by_shape[obj.shape] = by_shape.get(obj.shape, 0) + 1
    parts = [f"{article(s)} {s}" if k == 1 else f"{count_word(k)} {plural(s)}" for s, k in by_shape.items()]
    return sentence(f"{count_word(n)} {word}: {join(parts)}")


def write_captions(objects: list[ObjectView], image_size: int, tone: str, rng: np.random.Generator) -> list[str]:
    """Five captions: inventory, layout, then three partial ones in random order."""
    partial = [
        relation_caption(objects, image_size, tone, rng),
        salient_caption(objects, tone, rng),
        count_caption(objects, tone, rng),
    ]
    order = rng.permutation(len(partial))
    return [inventory_caption(objects, tone, rng), layout_caption(objects, image_size, rng)] + [partial[i] for i in order]
