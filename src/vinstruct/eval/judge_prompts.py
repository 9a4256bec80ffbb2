"""The judge's prompts, written here and read back by the offline scripted judge.

Three requests:
- review     (LLaVA-Bench) score a reference and a candidate answer 1-10 against the scene text
- solve      (ScienceQA, text only) answer a multiple-choice question without the image
- arbitrate  (ScienceQA judge ensemble) decide between two disagreeing answers
Each request is a system message and one user message whose sections are delimited by
bracketed headings, so both a hosted LLM and `scripted_judge` can read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vinstruct.eval.extract import option_letters

REVIEW_SYSTEM = ("You review answers to questions about an image. You cannot see the image: a description "
                 "of it stands in its place. You are careful, fair and brief.")
SOLVE_SYSTEM = ("You answer multiple-choice science questions from their text alone. When the text is not "
                "enough, say so rather than guess.")
ARBITRATE_SYSTEM = ("You settle disagreements between two answers to a multiple-choice science question, "
                    "reading only its text.")

REVIEW_RULES = {
    "conversation": "Judge how helpful, relevant and accurate each answer is for the question. Check every "
                    "fact an answer states against the scene description.",
    "detail": "Judge how accurate and how complete each description is. Objects, colours, counts and positions "
              "that agree with the scene description count for an answer; details that contradict it count "
              "against it; leaving out much of the scene counts against it too.",
    "complex": "Judge whether each answer reasons soundly to a useful conclusion, and whether the facts it "
               "relies on agree with the scene description.",
}
SCORE_INSTRUCTIONS = ("Give each assistant one overall score from 1 to 10; higher is better. Write the two "
                      "scores on the first line, Assistant 1's first, separated by a space, and nothing else on "
                      "that line. Then explain the scores in a few sentences. The order in which the answers "
                      "appear must not sway you.")
SCORE_REMINDER = ("Your reply could not be read. Start again with a first line holding only the two scores, "
                  "for example \"7 5\", then your explanation.")
LETTER_INSTRUCTIONS = 'Think briefly, then end with the sentence "The answer is X." where X is one option letter.'
LETTER_REMINDER = 'Your reply named no single option. End your reply with "The answer is X." for one letter X.'

_SECTION = re.compile(r"^\[(?P<name>[^\]\n]+)\]\s*$", re.MULTILINE)


def sections(text: str) -> dict[str, str]:
    """{heading: body} for "[Heading]" lines; "[End of ...]" lines close a section."""
    found: dict[str, str] = {}
    marks = list(_SECTION.finditer(text))
    for index, mark in enumerate(marks):
        name = mark.group("name").strip()
        if name.lower().startswith("end of "):
            continue
        end = marks[index + 1].start() if index + 1 < len(marks) else len(text)
        found[name] = text[mark.end():end].strip("\n")
    return found


# ---- LLaVA-Bench review ------------------------------------------------------------------------------------
def review_messages(context: str, question: str, reference: str, candidate: str, category: str) -> list[dict]:
    rule = REVIEW_RULES.get(category, REVIEW_RULES["conversation"])
    user = (f"[Scene description]\n{context.strip()}\n[End of scene description]\n\n"
            f"[Question]\n{question.strip()}\n[End of question]\n\n"
            f"[Assistant 1]\n{reference.strip()}\n[End of Assistant 1]\n\n"
            f"[Assistant 2]\n{candidate.strip()}\n[End of Assistant 2]\n\n"
            f"[Review rule: {category}]\n{rule}\n{SCORE_INSTRUCTIONS}")
    return [{"role": "system", "content": REVIEW_SYSTEM}, {"role": "user", "content": user}]


@dataclass
class ReviewRequest:
    context: str
    question: str
    answers: tuple[str, str]
    category: str


def read_review_request(text: str) -> ReviewRequest | None:
    found = sections(text)
    rule = next((name for name in found if name.startswith("Review rule:")), None)
    needed = ("Scene description", "Question", "Assistant 1", "Assistant 2")
    if rule is None or any(name not in found for name in needed):
        return None
    return ReviewRequest(found["Scene description"], found["Question"],
                         (found["Assistant 1"], found["Assistant 2"]), rule.split(":", 1)[1].strip())


# ---- ScienceQA: text-only answer and arbitration ---------------------------------------------------------------
def question_block(question: str, choices: list[str], hint: str = "") -> str:
    options = "\n".join(f"{letter}. {choice}" for letter, choice in zip(option_letters(len(choices)), choices))
    context = " ".join(hint.split()) or "(none)"
    return (f"[Multiple-choice question]\nContext: {context}\nQuestion: {question.strip()}\nOptions:\n{options}\n"
            "[End of multiple-choice question]")


def solve_messages(question: str, choices: list[str], hint: str = "", has_image: bool = False) -> list[dict]:
    note = "An image belongs to this question, but you cannot see it." if has_image else "No image belongs to it."
    user = f"{question_block(question, choices, hint)}\n\n[Task: solve]\n{note} {LETTER_INSTRUCTIONS}"
    return [{"role": "system", "content": SOLVE_SYSTEM}, {"role": "user", "content": user}]


def arbitrate_messages(question: str, choices: list[str], hint: str, text_only_answer: str,
                       with_image_answer: str, has_image: bool) -> list[dict]:
    seeing = "also saw the image" if has_image else "read the same text"
    user = (f"{question_block(question, choices, hint)}\n\n"
            f"[Assistant 1]\n{text_only_answer.strip()}\n[End of Assistant 1]\n\n"
            f"[Assistant 2]\n{with_image_answer.strip()}\n[End of Assistant 2]\n\n"
            f"[Task: arbitrate]\nAssistant 1 read only the text; Assistant 2 {seeing}. Their answers differ. "
            f"Decide which option is right, giving your own final answer. {LETTER_INSTRUCTIONS}")
    return [{"role": "system", "content": ARBITRATE_SYSTEM}, {"role": "user", "content": user}]


@dataclass
class ChoiceRequest:
    task: str  # "solve" or "arbitrate"
    context: str
    question: str
    choices: list[str]
    has_image: bool
    answers: tuple[str, str] | None = None


_OPTION = re.compile(r"^([A-Z])\. (.*)$")


def read_choice_request(text: str) -> ChoiceRequest | None:
    found = sections(text)
    task = next((name.split(":", 1)[1].strip() for name in found if name.startswith("Task:")), None)
    block = found.get("Multiple-choice question")
    if task not in ("solve", "arbitrate") or block is None:
        return None
    context, question, choices, in_options = "", "", [], False
    for line in block.splitlines():
        if line.startswith("Context: "):
            context = line[len("Context: "):]
        elif line.startswith("Question: "):
            question = line[len("Question: "):]
        elif line.strip() == "Options:":
            in_options = True
        elif in_options and _OPTION.match(line):
            choices.append(_OPTION.match(line).group(2))
    context = "" if context == "(none)" else context
    body = found[f"Task: {task}"]
    has_image = "also saw the image" in body or "An image belongs" in body
    answers = (found.get("Assistant 1", ""), found.get("Assistant 2", "")) if task == "arbitrate" else None
    return ChoiceRequest(task, context, question, choices, has_image, answers)
