"""The offline judge: scores by facts right and wrong against the scene; solves and arbitrates ScienceQA."""

import pytest

from vinstruct.eval import judge_prompts, scripted_judge
from vinstruct.eval.extract import extract_letter, parse_scores
from vinstruct.eval.facts import answer_facts
from vinstruct.eval.scene import objects_of_symbolic

SCENE = ("A red circle and two blue squares.\n\n"
         "red circle: [0.1, 0.1, 0.3, 0.3]\nblue square: [0.6, 0.6, 0.9, 0.9]\nblue square: [0.6, 0.1, 0.9, 0.3]")
OBJECTS = objects_of_symbolic(SCENE)


@pytest.mark.parametrize("answer, facts", [
    ("There is a red circle on the left.", [("a red circle", True), ("the red circle is left", True)]),
    ("I see two blue squares.", [("2 blue squares", True)]),
    ("I see three blue squares.", [("3 blue squares", False)]),
    ("There are 3 objects.", [("3 objects", True)]),
    ("The red circle is to the right of the blue square.",
     [("a red circle", True), ("the red circle is right of the blue square", False), ("a blue square", True)]),
    ("There is no green star.", [("no green star", True)]),
    ("There is no red circle.", [("no red circle", False)]),
    ("A yellow triangle sits at the top.", [("a yellow triangle", False)]),
    ("What a lovely day.", []),
])
def test_facts_read_from_answers(answer, facts):
    assert [(f.text, f.true) for f in answer_facts(answer, OBJECTS)] == facts


def _review(reference, candidate, category="conversation", question="What is in the image?"):
    reply = scripted_judge.respond(judge_prompts.review_messages(SCENE, question, reference, candidate, category))
    return parse_scores(reply), reply


def test_review_rewards_true_facts_and_punishes_invented_ones():
    (ref, good), _ = _review("A red circle and two blue squares.", "A red circle on the left, two blue squares.")
    (_, bad), reply = _review("A red circle and two blue squares.", "A green star and a yellow heart.")
    assert ref == 10 and good == 10 and bad < 4
    assert "a green star" in reply  # the explanation names what was wrong


def test_detail_reviews_reward_completeness():
    (_, partial), _ = _review("x", "There is a red circle.", "detail")
    (_, full), _ = _review("x", "There is a red circle and there are two blue squares.", "detail")
    assert full > partial


def test_yes_no_questions_are_checked_against_the_scene():
    (right, wrong), _ = _review("Yes.", "No.", question="Is there a red circle in the image?")
    assert right > wrong


def test_other_requests_are_left_to_other_responders():
    assert scripted_judge.respond([{"role": "user", "content": "Describe a cat."}]) is None
    assert scripted_judge.respond([{"role": "system", "content": "You are a teacher."}]) is None


def _choice(task, question, choices, hint="", image=False, answers=("", "")):
    if task == "solve":
        messages = judge_prompts.solve_messages(question, choices, hint, image)
    else:
        messages = judge_prompts.arbitrate_messages(question, choices, hint, *answers, image)
    reply = scripted_judge.respond(messages)
    return extract_letter(reply, len(choices)), reply


@pytest.mark.parametrize("question, choices, hint, expected", [
    ("Based on the context, what shape is the blue object?", ["circle", "square"],
     "The picture shows: a red circle and a blue square.", "B"),
    ("What color is the circle?", ["blue", "red", "green"], "The picture shows: a red circle and a blue square.", "B"),
    ("Based on the context, how many objects does the picture show?", ["1", "2", "3"],
     "The picture shows: a red circle, two blue squares.", "C"),
    ("Which word names a color?", ["circle", "purple", "star"], "", "B"),
    ("Which word in the sentence names a shape?", ["with", "triangle", "picture"],
     "Read the sentence: A picture with a triangle.", "B"),
    ("What color is the circle in the picture?", ["red", "blue"], "", None),   # needs the image: abstains
    ("What color is the square?", ["blue", "red"], "The picture shows: a blue square and a red square.", None),
])
def test_text_only_solving(question, choices, hint, expected):
    letter, _ = _choice("solve", question, choices, hint)
    assert letter == expected


def test_arbitration_prefers_text_evidence_then_the_answer_that_saw_the_image():
    letter, _ = _choice("arbitrate", "Which word names a shape?", ["red", "star"],
                        answers=("The answer is B.", "A"))
    assert letter == "B"  # the text settles it, whatever the model said
    letter, _ = _choice("arbitrate", "What color is the circle in the picture?", ["red", "blue"], image=True,
                        answers=("The answer is A.", "B"))
    assert letter == "B"  # only the image can settle it: trust the answer that saw it


def test_vinstruct_teacher_serves_the_judge_too():
    from eval_support import serve

    from vinstruct.eval.endpoints import scripted_responders
    from vinstruct.eval.endpoints import make_judge

    with serve(scripted_responders()) as url:
        run = make_judge(url).run([judge_prompts.review_messages(SCENE, "What is there?", "A red circle.",
                                                                 "A green star.", "conversation")],
                                  parse_scores, judge_prompts.SCORE_REMINDER, progress=False)
    assert run.verdicts[0].parsed == (10.0, 2.0)


@pytest.mark.parametrize("question, answer, score", [
    ("How many squares are there in the image?", "Two.", 10),
    ("How many squares are there in the image?", "There are 3 squares.", 2),
    ("How many triangles are there?", "None.", 10),
    ("What color is the circle in the image?", "Red.", 10),
    ("What color is the circle in the image?", "Blue.", 2),
    ("What shape is the red object?", "A circle.", 10),
    ("Is there a red circle in the image?", "There is a red circle.", 10),
    ("Is there a red circle in the image?", "No.", 2),
])
def test_short_answers_to_focused_questions(question, answer, score):
    from vinstruct.eval.scripted_judge import score_answer

    assert score_answer(answer, question, OBJECTS, "conversation")[0] == score


def test_an_answer_that_dodges_the_question_scores_at_most_four():
    from vinstruct.eval.scripted_judge import score_answer

    score, reason = score_answer("There is a red circle.", "How many squares are there in the image?", OBJECTS,
                                 "conversation")
    assert score <= 4 and reason == "does not answer what the question asks"
