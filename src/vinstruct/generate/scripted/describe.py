"""Scripted detailed descriptions and complex-reasoning questions with step-by-step answers."""

from __future__ import annotations

import random
from collections import Counter

from vinstruct.generate.scripted.facts import inventory, there_is
from vinstruct.generate.scripted.language import capitalize, join, number_word, pick, plural, with_article
from vinstruct.generate.scripted.scene import Scene, SceneObject, region_phrase, relation


def _reading_order(objects: list[SceneObject]) -> list[SceneObject]:
    rank = {"top": 0, "middle": 1, "bottom": 2}
    return sorted(objects, key=lambda o: (rank[o.row], o.cx))


def _sized(scene: Scene, obj: SceneObject) -> str:
    size = scene.size_word(obj)
    return f"{size} {obj.name}" if size else obj.name


def write_detail(scene: Scene, rng: random.Random) -> str:
    if not scene.has_boxes:
        return _detail_from_captions(scene, rng)
    n, coll = len(scene.objects), scene.collective
    background = scene.background()
    on = f" on {with_article(background)} background" if background else ""
    what = f"{number_word(n)} {plural(coll) if n > 1 else coll}" if n > 1 else with_article(coll)
    sentences = [pick(rng, ["The image shows {w}{b}.", "This picture contains {w}{b}.", "In this image there {v} {w}{b}."],
                      w=what, b=on, v="are" if n > 1 else "is")]
    for obj in _reading_order(scene.objects):
        phrase, where = with_article(_sized(scene, obj)), region_phrase(obj)
        sentences.append(pick(rng, ["{W}, there is {p}.", "{P} sits {w}.", "{W} you can see {p}.", "There is {p} {w}."],
                              W=capitalize(where), w=where, p=phrase, P=capitalize(phrase)))
    if n == 1:
        sentences.append(_alone(scene, scene.objects[0], rng))
    sentences += _relation_sentences(scene, rng)
    sentences.append(_color_summary(scene, rng))
    largest = scene.largest()
    if largest is not None:
        sentences.append(f"The {largest.name} is the largest {coll} in the picture.")
    return " ".join(s for s in sentences if s)


def _alone(scene: Scene, obj: SceneObject, rng: random.Random) -> str:
    """For a one-object scene: how big it looks and that nothing else is there."""
    size = "small" if obj.area < 0.03 else "large" if obj.area > 0.12 else "medium-sized"
    rest = "plain background" if scene.background() is None else f"{scene.background()} background"
    return pick(rng, ["The {n} is {s} and it is the only {c} in the picture; the rest of the image is {r}.",
                      "It is a {s} {n}, and nothing else appears in the picture apart from the {r}."],
                n=obj.name, s=size, c=scene.collective, r=rest)


def _relation_sentences(scene: Scene, rng: random.Random, limit: int = 2) -> list[str]:
    named = [(o, scene.referent(o)) for o in scene.objects]
    named = [(o, r) for o, r in named if r]
    pairs = [(a, ra, b, rb) for a, ra in named for b, rb in named if a.index < b.index and relation(a, b) != "next to"]
    rng.shuffle(pairs)
    return [f"{capitalize(ra)} is {relation(a, b)} {rb}." for a, ra, b, rb in pairs[:limit]]


def _color_summary(scene: Scene, rng: random.Random) -> str:
    colors = Counter(o.color for o in scene.objects if o.color)
    if not colors or len(scene.objects) < 2:
        return ""
    if len(colors) == len(scene.objects):
        return pick(rng, ["Each {c} has its own color: {l}.", "No two {p} share a color."], c=scene.collective,
                    p=plural(scene.collective), l=join(list(colors)))
    color, k = colors.most_common(1)[0]
    if k > 1 and list(colors.values()).count(k) == 1:
        return f"{capitalize(number_word(k))} of the {plural(scene.collective)} are {color}."
    return f"The colors present are {join(list(colors))}."


def _detail_from_captions(scene: Scene, rng: random.Random) -> str:
    captions = [c.rstrip(". ") for c in scene.captions if c.strip()]
    if not captions:
        return "The image shows a scene that is hard to make out."
    first = captions[0][:1].lower() + captions[0][1:]
    rest = [capitalize(c) + "." for c in captions[1:3]]
    return " ".join([pick(rng, ["The image shows {c}.", "This picture shows {c}."], c=first), *rest])


# ---- complex reasoning ---------------------------------------------------------------------------
def _remove_color(scene, rng):
    colors = [c for c in scene.colors() if 0 < len(scene.matching(color=c)) < len(scene.objects)]
    if not colors:
        return None
    color = rng.choice(colors)
    gone, rest = scene.matching(color=color), [o for o in scene.objects if o.color != color]
    coll, n = scene.collective, len(scene.objects)
    question = f"If all the {color} {plural(coll)} were removed, how many {plural(coll)} would remain?"
    answer = (f"Let's count step by step. The image has {n} {plural(coll)}: {inventory(scene.objects)}. "
              f"{capitalize(number_word(len(gone)))} of them {'is' if len(gone) == 1 else 'are'} {color}: {inventory(gone)}. "
              f"Removing {'it' if len(gone) == 1 else 'them'} leaves {inventory(rest)}. "
              f"So {len(rest)} {coll if len(rest) == 1 else plural(coll)} would remain.")
    return question, answer


def _closest_pair(scene, rng):
    named = [(o, scene.referent(o)) for o in scene.objects]
    if len(named) < 3 or any(r is None for _, r in named):
        return None
    pairs = sorted(((a.distance(b), a, ra, b, rb) for i, (a, ra) in enumerate(named) for b, rb in named[i + 1:]),
                   key=lambda t: t[0])
    if pairs[1][0] < 1.25 * pairs[0][0]:
        return None
    _, a, ra, b, rb = pairs[0]
    coll = scene.collective
    places = "; ".join(f"{r} is {region_phrase(o)}" for o, r in named)
    question = pick(rng, ["Which two {p} are closest to each other?", "Which pair of {p} sits closest together?"], p=plural(coll))
    answer = (f"First, where is everything? {capitalize(places)}. Comparing the gaps between each pair, "
              f"{ra} and {rb} are much nearer to each other than any other two {plural(coll)}: {ra} is {relation(a, b)} {rb}. "
              f"So the closest pair is {ra} and {rb}.")
    return question, answer


def _majority_color(scene, rng):
    colors = Counter(o.color for o in scene.objects if o.color)
    if len(colors) < 2:
        return None
    (top, k), (_, k2) = colors.most_common(2)
    if k == k2:
        return None
    coll = scene.collective
    tally = "; ".join(f"{c}: {inventory(scene.matching(color=c))}" for c in colors)
    question = f"Which color is the most common among the {plural(coll)}, and how many {plural(coll)} have it?"
    answer = (f"Let's group the {plural(coll)} by color. {capitalize(tally)}. {capitalize(top)} appears {k} times, "
              f"more than any other color, so the most common color is {top}, shared by {k} {plural(coll)}.")
    return question, answer


def _side_balance(scene, rng):
    left, right = scene.matching(side="left"), scene.matching(side="right")
    if len(left) == len(right) or len(scene.objects) < 2:
        return None
    coll = scene.collective
    winner = "left" if len(left) > len(right) else "right"
    describe = lambda group: inventory(group) if group else "nothing"  # noqa: E731
    question = f"Which half of the image holds more {plural(coll)}, the left or the right?"
    answer = (f"Let's split the picture down the middle. On the left half there is {describe(left)}; "
              f"on the right half there is {describe(right)}. That makes {len(left)} on the left against {len(right)} "
              f"on the right, so the {winner} half holds more {plural(coll)}.")
    return question, answer


def _left_to_right(scene, rng):
    objects = sorted(scene.objects, key=lambda o: o.cx)
    named = [scene.referent(o) for o in objects]
    if len(objects) < 2 or None in named or any(b.cx - a.cx < 0.05 for a, b in zip(objects, objects[1:])):
        return None
    coll = scene.collective
    question = f"If you go through the {plural(coll)} from left to right, in what order do you meet them?"
    steps = [f"{r} ({region_phrase(o)})" for o, r in zip(objects, named)]
    answer = (f"Let's sort the {plural(coll)} by how far left they are. Starting from the left edge, the first is "
              f"{steps[0]}, then {join(steps[1:])}. So the order from left to right is {join(named)}.")
    return question, answer


def _compare_counts(scene, rng):
    nouns = scene.nouns()
    if len(nouns) < 2:
        return None
    a, b = rng.sample(nouns, 2)
    na, nb = len(scene.matching(noun=a)), len(scene.matching(noun=b))
    question = f"Are there more {plural(a)} than {plural(b)} in the image?"
    if na > nb:
        verdict = f"Yes, there are more {plural(a)} than {plural(b)}"
    elif na < nb:
        verdict = f"No, there are fewer {plural(a)} than {plural(b)}"
    else:
        verdict = f"No, there are exactly as many {plural(a)} as {plural(b)}"
    answer = (f"{verdict}. Counting them: {there_is(scene.matching(noun=a)).lower()}, and "
              f"{there_is(scene.matching(noun=b)).lower()}. That is {na} against {nb}.")
    return question, answer


COMPLEX_MAKERS = [_remove_color, _closest_pair, _majority_color, _side_balance, _left_to_right, _compare_counts]


def write_complex(scene: Scene, rng: random.Random) -> str:
    """One reasoning question and its step-by-step answer, in the prompt format."""
    qa = None
    if scene.has_boxes:
        makers = list(COMPLEX_MAKERS)
        rng.shuffle(makers)
        qa = next((qa for qa in (m(scene, rng) for m in makers) if qa), None)
    if qa is None:
        qa = _from_captions(scene, rng)
    return f"Question: {qa[0]}\nAnswer: {qa[1]}"


def _from_captions(scene: Scene, rng: random.Random):
    captions = [c.rstrip(". ") for c in scene.captions if c.strip()] or ["a scene"]
    agreed = captions[0][:1].lower() + captions[0][1:]
    question = pick(rng, ["What is the main thing going on in this image, and how can you tell?",
                          "What stands out most in this scene, and why?"])
    support = f" Other details agree: {captions[1][:1].lower() + captions[1][1:]}." if len(captions) > 1 else ""
    answer = (f"Looking at the scene as a whole, it shows {agreed}.{support} "
              f"So the main thing going on is {agreed}.")
    return question, answer
