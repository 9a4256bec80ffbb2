"""Conversations from captions alone (the paper's setting for the conversation type).

Without boxes the teacher may state only what the captions say: objects they name
("a green star" -> it exists), counts they give ("two blue stars", "four shapes"),
colours and shapes they tie together, and places they name ("a green star on the left").
"""

from __future__ import annotations

import random
import re

from vinstruct.generate.scripted.language import capitalize, counted, plural, with_article
from vinstruct.generate.scripted.scene import COLOR_WORDS, SHAPE_WORDS, Scene, caption_mentions

_COUNTS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_PLACE = (r"(on the (?:left|right)(?: side)?|at the (?:top|bottom)(?: (?:left|right))?|near the (?:top|bottom)"
          r"|in the (?:center|middle)|in the (?:top|bottom) (?:left|right) corner)")
PER_KIND = 2  # at most this many questions of one kind, so that existence questions do not crowd out the rest


def _stated_places(captions: list[str]) -> dict[tuple[str, str], str]:
    """(color, shape) -> the place a caption names for it, e.g. ('green', 'star') -> 'on the left'."""
    colors, shapes = "|".join(sorted(COLOR_WORDS)), "|".join(sorted(SHAPE_WORDS))
    pattern = re.compile(rf"\b(?:a|an|the)\s+(?:(?:small|large|big|tiny)\s+)?({colors})\s+({shapes})\s+{_PLACE}")
    places: dict[tuple[str, str], str] = {}
    for caption in captions:
        for color, shape, place in pattern.findall(caption.lower()):
            places.setdefault((color, shape), place)
    return places


def caption_questions(scene: Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """(kind, question, answer) triples, every answer stated by some caption."""
    caption = scene.captions[0].rstrip(". ") if scene.captions else "nothing I can name"
    items = [("overview", rng.choice(["What is shown in the picture?", "What do you see in this image?"]),
              f"The image shows {caption[:1].lower() + caption[1:]}.")]
    mentions = caption_mentions(scene.captions)
    most: dict[tuple, int] = {}  # (color, noun) -> the largest count a caption states (1 if unsaid)
    colors_by_noun: dict[str, set] = {}
    nouns_by_color: dict[str, set] = {}
    for m in mentions:
        most[(m.color, m.noun)] = max(most.get((m.color, m.noun), 1), m.count or 1)
        colors_by_noun.setdefault(m.noun, set()).add(m.color)
        if m.color:
            nouns_by_color.setdefault(m.color, set()).add(m.noun)
    for (color, noun), count in most.items():
        what = f"{color} {noun}" if color else noun
        if color and count == 1:
            items.append(("exists", f"Is there {with_article(what)} in the image?", f"Yes, there is {with_article(what)} in the image."))
        elif count > 1:
            items.append(("count", f"How many {plural(what)} are there?", f"There are {counted(count, what)}."))
    for noun, colors in colors_by_noun.items():
        if len(colors) == 1 and None not in colors:
            color = next(iter(colors))
            if most[(color, noun)] > 1:
                items.append(("color", f"What color are the {plural(noun)}?", f"The {plural(noun)} are {color}."))
            else:
                items.append(("color", f"What color is the {noun}?", f"The {noun} is {color}."))
    for color, nouns in nouns_by_color.items():
        if len(nouns) == 1 and most[(color, next(iter(nouns)))] == 1:
            items.append(("shape", f"What shape is the {color} object?", f"It is {with_article(next(iter(nouns)))}."))
    for (color, noun), place in _stated_places(scene.captions).items():
        if most.get((color, noun), 1) == 1:
            items.append(("place", f"Where is the {color} {noun}?", f"The {color} {noun} is {place}."))
            side = next((w for w in ("left", "right") if w in place.split()), None)
            if side:
                items.append(("side", f"Is the {color} {noun} on the left or the right?", f"It is on the {side}."))
    for text in scene.captions:
        match = re.search(r"\b(\d+|two|three|four|five|six|seven|eight|nine|ten) (shapes|objects)\b", text.lower())
        if match:
            number = _COUNTS.get(match.group(1), match.group(1))
            items.append(("count", f"How many {match.group(2)} are there?", f"There are {number} {match.group(2)}."))
            break
    if len(scene.captions) > 1 and not mentions:
        extra = scene.captions[rng.randrange(1, len(scene.captions))].rstrip(". ")
        items.append(("more", "What else can you tell me about the image?", capitalize(extra) + "."))
    return list(dict.fromkeys(items))


def conversation_from_captions(scene: Scene, rng: random.Random, max_turns: int) -> list[tuple[str, str]]:
    items = caption_questions(scene, rng)
    rng.shuffle(items)
    chosen, per_kind = [], {}
    for kind, question, answer in items:
        if per_kind.get(kind, 0) < PER_KIND and len(chosen) < max_turns:
            per_kind[kind] = per_kind.get(kind, 0) + 1
            chosen.append((question, answer))
    return chosen
