"""Answering a free question about a scene (reference answers for evaluation).

The question is matched against the kinds a user asks most (count, colour, shape,
left/right, top/bottom, existence, where, relative side, largest/smallest,
describe); anything else gets a summary of the scene with its layout.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from vinstruct.generate.scripted import facts
from vinstruct.generate.scripted.conversation import COMMON_OBJECTS, CORE_SHAPES
from vinstruct.generate.scripted.describe import write_complex, write_detail
from vinstruct.generate.scripted.language import capitalize, join, plural, singular, with_article
from vinstruct.generate.scripted.scene import COLOR_MODIFIERS, COLOR_WORDS, GENERIC_NOUNS, SHAPE_WORDS, Scene, region_phrase

_FILLER = frozenset("the a an any of in on this that image picture photo scene there here is are do you see can".split())


@dataclass
class Target:
    color: str | None = None
    noun: str | None = None
    side: str | None = None

    def phrase(self, collective: str) -> str:
        return facts.describe_target(self.color, self.noun, collective)


def parse_target(scene: Scene, text: str) -> Target:
    """'the red circle on the left' -> Target('red', 'circle', 'left'); unknown nouns are kept."""
    words = re.findall(r"[a-z]+", text.lower())
    target = Target()
    for side in ("left", "right"):
        if f"on the {side}" in text.lower():
            target.side = side
            words = [w for w in words if w != side]
    colors = [w for w in words if w in COLOR_WORDS]
    if colors:
        first = words.index(colors[0])
        modifier = words[first - 1] if first > 0 and words[first - 1] in COLOR_MODIFIERS else ""
        target.color = f"{modifier} {colors[0]}".strip().replace("grey", "gray")
    known = set(scene.nouns()) | SHAPE_WORDS | set(CORE_SHAPES) | set(COMMON_OBJECTS)
    rest = [w for w in words if w not in COLOR_WORDS and w not in COLOR_MODIFIERS and w not in _FILLER]
    for word in rest:
        if singular(word) in known or word in known:
            target.noun = word if word in known else singular(word)
            return target
    content = [w for w in rest if singular(w) not in GENERIC_NOUNS and w not in GENERIC_NOUNS and len(w) > 2]
    if content:
        target.noun = singular(content[-1])
    return target


def _objects(scene: Scene, target: Target):
    return scene.matching(color=target.color, noun=target.noun, side=target.side)


def _absent(scene: Scene, target: Target) -> str:
    return f"There is no {target.phrase(scene.collective)} in the image. It shows {facts.inventory(scene.objects)}."


def _about(kind):
    """Handlers for questions about one object: resolve the target, answer or say it is absent."""
    def handler(scene, match, rng):
        target = parse_target(scene, match.group("target"))
        objects = _objects(scene, target)
        if not objects:
            return _absent(scene, target)
        ref = f"the {target.phrase(scene.collective)}"
        if kind == "color":
            return facts.answer_color(scene, rng, objects, ref)
        if kind == "shape":
            return facts.answer_shape(scene, rng, objects, ref)
        if len(objects) > 1:
            places = join([f"{with_article(o.name)} {region_phrase(o)}" for o in objects])
            return f"There are {len(objects)} {plural(target.phrase(scene.collective))}: {places}."
        answer = {"side": facts.answer_side, "level": facts.answer_level, "where": facts.answer_where}[kind]
        return answer(scene, rng, objects[0], ref)
    return handler


def _count(scene, match, rng):
    target = parse_target(scene, match.group("target"))
    if target.side:
        n = len(_objects(scene, target))
        return f"There {'is' if n == 1 else 'are'} {n} {target.phrase(scene.collective) if n == 1 else plural(target.phrase(scene.collective))} on the {target.side}."
    return facts.answer_count(scene, rng, color=target.color, noun=target.noun)


def _exists(scene, match, rng):
    target = parse_target(scene, match.group("target"))
    return facts.answer_exists(scene, rng, target.color, target.noun)


def _relative(scene, match, rng):
    a, b = parse_target(scene, match.group("target")), parse_target(scene, match.group("other"))
    first, second = _objects(scene, a), _objects(scene, b)
    if len(first) != 1 or len(second) != 1:
        return None
    return facts.answer_relation_side(scene, rng, first[0], second[0], f"the {a.phrase(scene.collective)}",
                                      f"the {b.phrase(scene.collective)}")


def _extreme(scene, match, rng):
    word = {"biggest": "largest", "largest": "largest", "smallest": "smallest"}[match.group("word")]
    obj = scene.largest() if word == "largest" else scene.smallest()
    if obj is None:
        return f"No single {scene.collective} stands out: {facts.inventory(scene.objects)} are about the same size."
    return facts.answer_extreme(scene, rng, obj, word)


_T = r"(?P<target>.+?)"
HANDLERS = [
    (rf"how many {_T}(?: are| is| can| do| in| does|$)", _count),
    (r"(?:which|what) (?:\w+ )?is the (?P<word>largest|biggest|smallest)", _extreme),
    (r"(?:which|what) is (?:the )?(?P<word>largest|biggest|smallest)", _extreme),
    (rf"(?:what colou?r (?:is|are)|what is the colou?r of|which colou?r is) {_T}$", _about("color")),
    (rf"(?:what shape is|what is the shape of|which shape is|what kind of shape is) {_T}$", _about("shape")),
    (rf"^is {_T} to the (?:left|right) (?:of|or)(?: to the (?:left|right) of)? (?P<other>.+)$", _relative),
    (rf"^(?:is|are) {_T} on the (?:left|right)(?: side)? or (?:the )?(?:left|right)", _about("side")),
    (rf"^which side (?:of the \w+ )?(?:is|are) {_T} on$", _about("side")),
    (rf"^(?:is|are) {_T} (?:at|near|in) the (?:top|bottom|upper|lower)\b.* or ", _about("level")),
    (rf"^(?:is there|are there|do you see|can you see|can you spot|does the \w+ (?:contain|show|have)) {_T}$", _exists),
    (rf"^where (?:is|are) {_T}$", _about("where")),
]
_DESCRIBE = re.compile(r"\b(describe|description|what do you see|what is (?:in|shown)|what does .* (?:show|contain)|tell me about)\b")
_REASON = re.compile(r"\b(why|how come|what might|what would|if |explain|reason)\b")


def normalize_question(question: str) -> str:
    text = question.replace("<image>", " ").strip().lower()
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"[?.!\s]+$", "", text)


def answer_question(scene: Scene, question: str, rng: random.Random) -> str:
    text = normalize_question(question)
    if scene.has_boxes:
        for pattern, handler in HANDLERS:
            match = re.search(pattern, text)
            if match:
                answer = handler(scene, match, rng)
                if answer:
                    return answer
    if _DESCRIBE.search(text) or not scene.has_boxes:
        return write_detail(scene, rng)
    if _REASON.search(text):
        reasoning = write_complex(scene, rng).split("Answer:", 1)[1].strip()
        return f"{facts.overview(scene, rng)} {reasoning}"
    return f"{facts.overview(scene, rng)} {capitalize(write_detail(scene, rng).split('. ', 1)[-1])}"
