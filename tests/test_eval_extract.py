"""Reading answers out of model and judge replies: tables of real-looking outputs, adversarial ones included."""

import pytest

from vinstruct.eval.exact import is_correct, normalize
from vinstruct.eval.extract import extract_letter, extract_yes_no, match_option_text, parse_scores

VOCAB = {"color": ["red", "green", "blue", "yellow"], "shape": ["circle", "square", "triangle", "cross"]}


@pytest.mark.parametrize("reply, n, expected", [
    ("B", 4, "B"),
    ("(C)", 4, "C"),
    ("  A\n", 3, "A"),
    ("B. The circle is red.", 4, "B"),
    ("B) red", 4, "B"),
    ("C: triangle", 4, "C"),
    ("The answer is D.", 4, "D"),
    ("Looking at the picture, the shape is round. The answer is A.", 4, "A"),
    ("The answer is (B).", 4, "B"),
    ("Answer is: C", 4, "C"),
    ("The answer is B. So the answer is B.", 4, "B"),      # repeated, same letter
    ("The answer is A. No wait, the answer is B.", 4, None),  # two different letters: a hedge
    ("The answer is A or B.", 4, None),
    ("A red circle.", 4, None),                               # 'A' as an article, not an option
    ("a", 4, None),                                           # lower case is not a letter answer
    ("E", 4, None),                                           # beyond the options
    ("The answer is E.", 4, None),
    ("the answer is a red circle", 4, None),
    ("", 4, None),
    ("I cannot tell without seeing the image.", 4, None),
    ("FAILED", 4, None),
])
def test_option_letters(reply, n, expected):
    assert extract_letter(reply, n) == expected


def test_option_text_is_matched_only_when_unique():
    assert match_option_text("red.", ["blue", "Red", "green"]) == "B"
    assert match_option_text("dark red", ["blue", "red"]) is None
    assert match_option_text("red", ["red", "red"]) is None


@pytest.mark.parametrize("reply, expected", [
    ("Yes", "yes"), ("yes.", "yes"), ("Yes, there is a red circle in the image.", "yes"),
    ("No", "no"), ("No, there is not.", "no"), ("There is no green star.", "no"),
    ("It isn't there.", "no"), ("There is a red circle, yes.", "yes"),
    ("no, yes", "no"),  # the first word that decides wins
    ("A red circle.", None), ("", None), ("maybe", None),
])
def test_yes_no(reply, expected):
    assert extract_yes_no(reply) == expected


@pytest.mark.parametrize("review, expected", [
    ("8 6\nAssistant 1 is accurate; Assistant 2 misses the star.", (8.0, 6.0)),
    ("9, 7\nBoth are fine.", (9.0, 7.0)),
    ("8/10 and 5/10\nexplanation", (8.0, 5.0)),
    ("**7 4**\nThe second answer invents a dog.", (7.0, 4.0)),
    ("10 10.", (10.0, 10.0)),
    ("8.5 7\n", (8.5, 7.0)),
    ("Scores: 6 3\n...", (6.0, 3.0)),
    ("I will review both.\nAssistant 1: 9\nAssistant 2: 6", (9.0, 6.0)),
    ("Assistant 1 score = 7/10. Assistant 2 score = 2/10.", (7.0, 2.0)),
    ("", None),
    ("Both answers are good.", None),
    ("11 5\nout of range", None),
    ("0 5\nout of range", None),
    ("8 6 4\nthree numbers", None),
    ("Assistant 1: 8\nAssistant 1: 6\nAssistant 2: 5", None),  # two scores for one assistant
    ("8\nonly one", None),
    ("The first gets 8 out of 10 because it has 3 objects, the second 6", None),
])
def test_judge_scores(review, expected):
    assert parse_scores(review) == expected


def test_normalization():
    assert normalize("The Answer: THREE circles!") == "answer 3 circles"
    assert normalize("none", "count") == "0"
    assert normalize("none") == "none"


@pytest.mark.parametrize("answer, gold, kind, expected", [
    ("red", "red", "color", True),
    ("Red.", "red", "color", True),
    ("The red one", "red", "color", True),
    ("red circle", "red", "color", True),              # a shape after the colour is not another colour
    ("red or blue", "red", "color", False),            # hedge
    ("reddish", "red", "color", False),                # word boundary
    ("It is red", "red", "color", True),               # the first colour word is the answer
    ("The square is purple, not red.", "purple", "color", True),
    ("3", "3", "count", True),
    ("three", "3", "count", True),
    ("3 circles", "3", "count", True),
    ("3 or 4", "3", "count", False),
    ("zero", "0", "count", True),
    ("None", "0", "count", True),
    ("no circles", "0", "count", True),
    ("30", "3", "count", False),
    ("yes", "yes", "existence", True),
    ("Yes, there is.", "yes", "existence", True),
    ("yes and no", "yes", "existence", False),
    ("Yes, it is not.", "yes", "existence", False),
    ("No.", "no", "existence", True),
    ("no, yes", "no", "existence", False),
    ("left", "left", "position", True),
    ("On the left", "left", "position", True),
    ("There are 3 shapes: a red circle and 2 blue squares.", "3", "count", True),
    ("There is 1 star and 2 circles.", "1", "count", True),
    ("1 and 2", "1", "count", False),
    ("There are no circles.", "0", "count", True),
    ("No. There is no green star here, but there is a red one.", "no", "existence", True),
    ("Yes, there is one on the left.", "yes", "existence", True),
    ("I cannot tell.", "yes", "existence", False),
    ("left or right", "left", "position", False),
    ("circles", "circle", "shape", True),
    ("crosses", "cross", "shape", True),
    ("circle square", "circle", "shape", False),
    ("", "red", "color", False),
])
def test_exact_match_rule(answer, gold, kind, expected):
    assert is_correct(answer, gold, kind, VOCAB) is expected


@pytest.mark.parametrize("answer, expected", [
    ("It is in the top left corner.", True),   # only the options the question names count
    ("It is at the top.", False),              # no left/right answer at all
    ("Left, or maybe right.", False),
])
def test_options_named_by_the_question(answer, expected):
    question = "Is the red circle on the left or on the right side of the image?"
    assert is_correct(answer, "left", "position", VOCAB, question) is expected
