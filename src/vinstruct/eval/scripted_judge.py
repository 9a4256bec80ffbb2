"""The offline judge: a deterministic responder for the judge prompts of `judge_prompts`.

`respond(messages)` returns a reply when the first user message is one of our judge
requests and None otherwise, so it can sit in the scripted OpenAI-compatible server beside
the teacher's responders.

- review: each answer is scored from the facts it states about the scene, parsed from the
  symbolic text in the request (`vinstruct.eval.facts`): with p the share of its checkable
  facts that are true and c the share of the scene's objects it names,
      conversation  2 + 8p        complex  2 + 7p + min(true facts, 3)/3
      detail        1 + 5p + 4c
  rounded to an integer in 1-10; an answer with no checkable fact gets 4 (1 if empty). When
  the question asks for one checkable thing (yes/no existence, a count, a colour, a shape),
  the answer's reply to it is one of its facts, and an answer that does not give one scores
  at most 4.
- solve (ScienceQA, text only): questions about objects listed in the context ("The picture
  shows: a red circle, ..."), and word questions ("Which word names a colour?"), are
  answered; for anything that needs the image the reply says so and names no option.
- arbitrate: its own text-only answer when it has one, else Assistant 2's (who saw the
  image) when it names an option, else Assistant 1's.
"""

from __future__ import annotations

import re

from vinstruct.eval import facts as F
from vinstruct.eval.extract import extract_letter, option_letters
from vinstruct.eval.judge_prompts import (ChoiceRequest, ReviewRequest, read_choice_request,
                                          read_review_request)
from vinstruct.eval.scene import SceneObject, objects_of_symbolic, split_category

NO_FACT_SCORE = 4


def respond(messages: list[dict], rng=None) -> str | None:
    """The judge's reply to a chat request, or None when it is not a judge request (rng: unused,
    accepted so the function plugs into the scripted server's responder list)."""
    first_user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    if not isinstance(first_user, str):
        return None
    review = read_review_request(first_user)
    if review is not None:
        return _review(review)
    choice = read_choice_request(first_user)
    if choice is not None:
        return _solve(choice) if choice.task == "solve" else _arbitrate(choice)
    return None


# ---- LLaVA-Bench review -------------------------------------------------------------------------------
def score_answer(answer: str, question: str, objects: list[SceneObject], category: str) -> tuple[int, str]:
    """(score 1-10, one-sentence reason) for one answer."""
    if not answer.strip():
        return 1, "gives no answer"
    facts = F.answer_facts(answer, objects)
    focused, focus = F.focus_fact(question, answer, objects)
    if focus is not None and focus.text not in {f.text for f in facts}:
        facts.append(focus)
    if focused and focus is None:
        return min(NO_FACT_SCORE, 1 + sum(f.true for f in facts)), "does not answer what the question asks"
    if not facts:
        return NO_FACT_SCORE, "states nothing that the scene can confirm or refute"
    true = sum(f.true for f in facts)
    precision = true / len(facts)
    categories = {o.category for o in objects}
    coverage = len(F.mentioned_categories(answer, objects) & categories) / len(categories) if categories else 0.0
    if category == "detail":
        raw = 1 + 5 * precision + 4 * coverage
    elif category == "complex":
        raw = 2 + 7 * precision + min(true, 3) / 3
    else:
        raw = 2 + 8 * precision
    score = max(1, min(10, round(raw)))
    wrong = [f.text for f in facts if not f.true]
    reason = f"states {true} fact(s) correctly and {len(wrong)} incorrectly"
    if wrong:
        reason += " (" + "; ".join(wrong[:3]) + ")"
    if category == "detail":
        reason += f", naming {round(coverage * len(categories))} of {len(categories)} kinds of object"
    return score, reason


def _review(request: ReviewRequest) -> str:
    objects = objects_of_symbolic(request.context)
    (s1, why1), (s2, why2) = (score_answer(a, request.question, objects, request.category) for a in request.answers)
    return f"{s1} {s2}\nAssistant 1 {why1}. Assistant 2 {why2}."


# ---- ScienceQA: text-only solving and arbitration --------------------------------------------------------------
_LISTED = re.compile(r"shows?:\s*(.+)$", re.IGNORECASE)


def objects_in_context(context: str) -> list[SceneObject] | None:
    """Objects of a context such as "The picture shows: a red circle, two blue squares and a star."."""
    match = _LISTED.search(context)
    if not match:
        return None
    objects = []
    for part in re.split(r",\s*|\s+and\s+", match.group(1).strip().rstrip(".")):
        words = [F.NUMBER_WORDS.get(w, w) for w in part.lower().split() if w not in ("a", "an", "the")]
        count = 1
        if words and words[0].isdigit():
            count, words = int(words[0]), words[1:]
        if not words:
            continue
        color, shape = split_category(" ".join(words))
        objects += [SceneObject(F.singular(shape), color, (0.0, 0.0, 0.0, 0.0))] * count
    return objects


def _pick(choices: list[str], wanted: str) -> str | None:
    hits = [letter for letter, c in zip(option_letters(len(choices)), choices) if c.strip().lower() == wanted]
    return hits[0] if len(hits) == 1 else None


def _word_of_kind(choices: list[str], kind: str) -> str | None:
    lexicon = F.COLOR_WORDS if kind.startswith("colo") else F.SHAPE_WORDS
    hits = [letter for letter, c in zip(option_letters(len(choices)), choices) if F.singular(c.strip().lower()) in lexicon]
    return hits[0] if len(hits) == 1 else None


def solve_from_text(request: ChoiceRequest) -> tuple[str, str] | None:
    """(letter, reason) when the text alone settles the question, else None."""
    q = request.question.lower()
    word = re.search(r"which word.* names? an? (colou?r|shape)", q)
    if word:
        letter = _word_of_kind(request.choices, word.group(1))
        return (letter, f"only that option names a {word.group(1)}") if letter else None
    objects = objects_in_context(request.context)
    if not objects:
        return None
    asked = re.search(r"what colou?r is the (\w+)", q)
    if asked:
        matches = [o for o in objects if o.shape == F.singular(asked.group(1))]
        if len(matches) == 1:
            letter = _pick(request.choices, matches[0].color)
            return (letter, f"the context lists one {matches[0].shape}, and it is {matches[0].color}") if letter else None
        return None
    asked = re.search(r"what shape is the (\w+) (?:object|shape|one)", q)
    if asked:
        matches = [o for o in objects if o.color == asked.group(1)]
        if len(matches) == 1:
            letter = _pick(request.choices, matches[0].shape)
            return (letter, f"the context lists one {asked.group(1)} object, a {matches[0].shape}") if letter else None
        return None
    if re.search(r"how many (objects|shapes)", q):
        letter = _pick(request.choices, str(len(objects)))
        return (letter, f"the context lists {len(objects)} object{'s' if len(objects) != 1 else ''}") if letter else None
    return None


def _solve(request: ChoiceRequest) -> str:
    solved = solve_from_text(request)
    if solved is None:
        where = "the image" if request.has_image else "more information"
        return f"The text does not settle this question; it needs {where}, so I give no option."
    letter, reason = solved
    return f"Reading the text: {reason}. The answer is {letter}."


def _arbitrate(request: ChoiceRequest) -> str:
    solved = solve_from_text(request)
    if solved is not None:
        letter, reason = solved
        return f"The text settles it: {reason}. The answer is {letter}."
    text_only, with_image = request.answers or ("", "")
    n = len(request.choices)
    seeing = extract_letter(with_image, n)
    own = extract_letter(text_only, n)
    if request.has_image and seeing:
        return f"The text alone cannot decide, and Assistant 2 saw the image. The answer is {seeing}."
    if own or seeing:
        return f"Neither answer can be checked from the text; I keep the first that names an option. The answer is {own or seeing}."
    return "Neither answer names an option, and the text does not settle the question."
