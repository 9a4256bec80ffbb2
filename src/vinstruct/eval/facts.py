"""Facts an answer states about a scene of coloured shapes, checked against the scene.

An answer is read sentence by sentence, word by word:
  "<colour> <shape>"              that object is there (e.g. "a red circle")
  "<shape>" alone                 an object of that shape is there
  "<colour> object|shape|thing"   an object of that colour is there
  "<n> [<colour>] <shape>s"       there are exactly n of them (n in digits or words)
  "<n> objects|shapes"            the scene holds n objects
  "no|not|without ... <object>"   that object is absent (negation within 3 words before)
  "<object> ... left|right|top|bottom|upper|lower"   where it is (box centre vs the middle)
  "<object> ... left of|right of|above|below <object>"   how two objects are placed
Each fact is true or false for the scene; words that name nothing checkable are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vinstruct.eval.exact import NUMBER_WORDS
from vinstruct.eval.scene import SceneObject

COLOR_WORDS = {"red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black", "white",
               "gray", "grey", "cyan", "magenta", "teal", "navy", "maroon", "olive", "lime", "gold", "silver",
               "beige", "turquoise", "indigo"}
SHAPE_WORDS = {"circle", "square", "triangle", "rectangle", "star", "diamond", "cross", "heart", "hexagon",
               "pentagon", "octagon", "oval", "ellipse", "crescent", "arrow", "ring", "trapezoid", "rhombus"}
GENERIC = {"object", "shape", "thing", "item", "figure"}
NEGATIONS = {"no", "not", "without", "none", "isn", "aren", "nor", "never"}
SIDES = {"left": ("x", "low"), "right": ("x", "high"), "top": ("y", "low"), "upper": ("y", "low"),
         "bottom": ("y", "high"), "lower": ("y", "high")}
RELATIONS = {"left": ("x", -1), "right": ("x", 1), "above": ("y", -1), "below": ("y", 1)}


def singular(word: str) -> str:
    if word.endswith("es") and word[:-2] in SHAPE_WORDS | GENERIC:
        return word[:-2]
    if word.endswith("s") and word[:-1] in SHAPE_WORDS | GENERIC:
        return word[:-1]
    return word


@dataclass
class Mention:
    color: str | None
    shape: str | None  # None with a colour: "a red object"
    count: int | None
    negated: bool
    position: int  # token index


@dataclass
class Fact:
    text: str
    true: bool


class Lexicon:
    def __init__(self, objects: list[SceneObject]):
        self.colors = COLOR_WORDS | {o.color for o in objects if o.color}
        self.shapes = SHAPE_WORDS | {o.shape for o in objects if o.shape}

    def shape_of(self, word: str) -> str | None:
        word = singular(word)
        return word if word in self.shapes else None


def _tokens(sentence: str) -> list[str]:
    return [NUMBER_WORDS.get(t, t) for t in re.findall(r"[a-z]+|\d+", sentence.lower())]


def _mentions(tokens: list[str], lexicon: Lexicon) -> list[Mention]:
    found, i = [], 0
    while i < len(tokens):
        token = tokens[i]
        color, shape, end = None, None, i + 1
        if token in lexicon.colors and i + 1 < len(tokens):
            nxt = singular(tokens[i + 1])
            if lexicon.shape_of(tokens[i + 1]):
                color, shape, end = token, lexicon.shape_of(tokens[i + 1]), i + 2
            elif nxt in GENERIC:
                color, end = token, i + 2
        elif lexicon.shape_of(token):
            shape = lexicon.shape_of(token)
        elif singular(token) in GENERIC and i > 0 and tokens[i - 1].isdigit():
            found.append(Mention(None, None, int(tokens[i - 1]), False, i))
        if color or shape:
            count = int(tokens[i - 1]) if i > 0 and tokens[i - 1].isdigit() else None
            negated = any(t in NEGATIONS for t in tokens[max(0, i - 3):i])
            found.append(Mention(color, shape, count, negated, i))
            i = end
            continue
        i += 1
    return found


def _matching(objects: list[SceneObject], mention: Mention) -> list[SceneObject]:
    return [o for o in objects if (mention.color is None or o.color == mention.color)
            and (mention.shape is None or o.shape == mention.shape)]


def _name(mention: Mention) -> str:
    noun = mention.shape or "object"
    if mention.count is not None and mention.count != 1 or not (mention.color or mention.shape):
        noun += "es" if noun.endswith(("s", "x", "ch", "sh")) else "s"
    return " ".join(w for w in (mention.color, noun) if w)


def _side_fact(mention, side, objects) -> Fact:
    axis, end = SIDES[side]
    matches = _matching(objects, mention)
    index = 0 if axis == "x" else 1
    true = any((o.center[index] < 0.5) == (end == "low") for o in matches)
    return Fact(f"the {_name(mention)} is {side}", true)


def _relation_fact(first, relation, second, objects) -> Fact:
    axis, sign = RELATIONS[relation]
    index = 0 if axis == "x" else 1
    pairs = [(a, b) for a in _matching(objects, first) for b in _matching(objects, second) if a is not b]
    true = any((a.center[index] - b.center[index]) * sign > 0 for a, b in pairs)
    return Fact(f"the {_name(first)} is {relation} of the {_name(second)}", true)


def sentence_facts(sentence: str, objects: list[SceneObject], lexicon: Lexicon) -> list[Fact]:
    tokens = _tokens(sentence)
    mentions = _mentions(tokens, lexicon)
    facts = []
    for index, m in enumerate(mentions):
        matches = _matching(objects, m) if (m.color or m.shape) else objects
        if m.count is not None:
            facts.append(Fact(f"{m.count} {_name(m)}", len(matches) == m.count))
        elif m.negated:
            facts.append(Fact(f"no {_name(m)}", not matches))
        else:
            facts.append(Fact(f"a {_name(m)}", bool(matches)))
        if m.negated or not (m.color or m.shape) or not matches:
            continue
        stop = mentions[index + 1].position if index + 1 < len(mentions) else len(tokens)
        window = tokens[m.position + 1:stop]
        for offset, word in enumerate(window):
            follows_of = offset + 1 < len(window) and window[offset + 1] == "of"
            if word in RELATIONS and (follows_of or word in ("above", "below")) and index + 1 < len(mentions):
                other = mentions[index + 1]
                if other.color or other.shape:
                    facts.append(_relation_fact(m, word, other, objects))
                break
            if word in SIDES:
                facts.append(_side_fact(m, word, objects))
                break
    return facts


def answer_facts(answer: str, objects: list[SceneObject]) -> list[Fact]:
    lexicon = Lexicon(objects)
    facts = []
    for sentence in re.split(r"(?<=[.!?;])\s+|\n+", answer):
        facts += sentence_facts(sentence, objects, lexicon)
    return facts


def focus_fact(question: str, answer: str, objects: list[SceneObject]) -> tuple[bool, Fact | None]:
    """(whether the question asks for one checkable thing, the answer's fact about it or None).

    Handled: "Is there a <object> ...?" (a leading yes/no, or the object named or negated),
    "How many <objects> ...?" (the
    answer's first number; "no"/"none" first means 0), "What color is the <shape>?" (the
    answer's first colour word), "What shape is the <colour> object?" (its first shape word).
    """
    lexicon = Lexicon(objects)
    q, said = _tokens(question), _tokens(answer)
    asked = _mentions(q, lexicon)
    if len(q) >= 3 and q[0] in ("is", "are") and q[1] == "there" and asked:
        present = bool(_matching(objects, asked[0]))
        if said[:1] in (["yes"], ["no"]):
            reply = said[0]
        else:  # "There is a red circle." / "There is no red circle." answer it too
            same = [m for m in _mentions(said, lexicon) if (m.color, m.shape) == (asked[0].color, asked[0].shape)]
            if not same:
                return True, None
            reply = "no" if same[0].negated else "yes"
        return True, Fact(f"answers {reply} to whether there is a {_name(asked[0])}", present == (reply == "yes"))
    if q[:2] == ["how", "many"]:
        target = asked[0] if asked else Mention(None, None, None, False, 0)
        number = next((int(t) for t in said if t.isdigit()), 0 if said[:1] in (["no"], ["none"]) else None)
        if number is None:
            return True, None
        counted = _matching(objects, target) if (target.color or target.shape) else objects
        return True, Fact(f"{number} {_name(Mention(target.color, target.shape, number, False, 0))}",
                          len(counted) == number)
    wants = re.match(r"what colou?r is the (\w+)|what shape is the (\w+) (?:object|shape|one)", " ".join(q))
    if wants:
        shape, color = lexicon.shape_of(wants.group(1) or ""), wants.group(2)
        pool = lexicon.colors if shape else lexicon.shapes
        said_word = next((singular(t) for t in said if singular(t) in pool), None)
        if said_word is None:
            return True, None
        said_color, said_shape = (said_word, shape) if shape else (color, said_word)
        true = any(o.color == said_color and o.shape == said_shape for o in objects)
        return True, Fact(f"the {shape or color + ' object'} is {said_word}", true)
    return False, None


def mentioned_categories(answer: str, objects: list[SceneObject]) -> set[str]:
    """Scene categories the answer names correctly (with their colour and shape)."""
    lexicon = Lexicon(objects)
    named = set()
    for sentence in re.split(r"(?<=[.!?;])\s+|\n+", answer):
        for m in _mentions(_tokens(sentence), lexicon):
            if not m.negated and m.color and m.shape:
                named.update(o.category for o in _matching(objects, m))
    return named
