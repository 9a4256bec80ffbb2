"""The words the auditor understands: colours, shapes, COCO's 80 categories and their synonyms, numbers.

A `Lexicon` maps every known word to its class (colour, noun, number, position, ...), so that
reading a turn is one dictionary lookup per token. There are two: the shapes world's (nouns are
shape names, colours are checked) and real COCO's (nouns are the 80 category names with a small
synonym table; colours are read but cannot be checked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

COLORS = frozenset(
    "red orange yellow green blue purple pink brown black white gray grey cyan magenta teal navy olive "
    "maroon lime violet indigo gold golden silver beige turquoise lavender tan".split()
)
COLOR_MODIFIERS = frozenset("dark light pale bright deep".split())
SHAPES = frozenset(
    "circle square triangle star hexagon diamond cross heart pentagon rectangle ellipse oval octagon "
    "crescent ring arrow trapezoid rhombus semicircle moon".split()
)
# Words that stand for "an object" without saying which: "two shapes", "the red one".
COLLECTIVES = frozenset("shape object figure thing item form one".split())
SIZE_WORDS = {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large",
              "huge": "large", "giant": "large", "medium": None}
SUPERLATIVES = {"largest": "largest", "biggest": "largest", "smallest": "smallest", "tiniest": "smallest"}
NUMBERS = {"zero": 0, "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "dozen": 12}

COCO_CATEGORIES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
# Other words people use for a COCO category (singular; plurals are derived).
COCO_SYNONYMS = {
    "person": "man woman boy girl child kid guy lady people persons men women children kids player "
              "skier surfer skateboarder snowboarder pedestrian rider",
    "bicycle": "bike", "motorcycle": "motorbike", "airplane": "plane jet aircraft airliner aeroplane",
    "car": "automobile taxi sedan", "truck": "pickup lorry", "boat": "ship sailboat canoe kayak yacht",
    "traffic light": "stoplight", "fire hydrant": "hydrant", "bird": "pigeon seagull gull duck parrot",
    "cat": "kitten kitty", "dog": "puppy", "horse": "pony", "sheep": "lamb", "cow": "cattle calf bull",
    "handbag": "purse", "tie": "necktie", "suitcase": "luggage", "skis": "ski", "sports ball": "ball football",
    "baseball glove": "mitt", "tennis racket": "racket racquet", "wine glass": "wineglass", "cup": "mug",
    "hot dog": "hotdog", "donut": "doughnut", "couch": "sofa", "potted plant": "houseplant",
    "dining table": "table", "tv": "television", "cell phone": "phone cellphone smartphone",
    "refrigerator": "fridge", "teddy bear": "teddy", "hair drier": "hairdryer",
}
# Two-word synonyms (the categories' own two-word names are added automatically).
COCO_SYNONYM_PAIRS = {("soccer", "ball"): "sports ball", ("tennis", "ball"): "sports ball",
                      ("hair", "dryer"): "hair drier", ("remote", "control"): "remote", ("tv", "set"): "tv",
                      ("mobile", "phone"): "cell phone", ("stop", "light"): "traffic light"}
# COCO words too ambiguous to read as an object in the shapes world ("right in the middle", "at the heart").
_AMBIGUOUS_IN_SHAPES = frozenset("orange tie remote mouse keyboard sink train bear bat kite book".split())

_IRREGULAR = {"people": "people", "men": "men", "women": "women", "children": "children", "mice": "mouse",
              "knives": "knife", "sheep": "sheep", "skis": "skis", "scissors": "scissors", "cattle": "cattle",
              "geese": "goose", "leaves": "leaf", "kids": "kid", "persons": "persons", "glasses": "glass"}

# Token classes.
COLOR, COLOR_MOD, SIZE, NUM, DET, NEG, NOUN, COLLECTIVE, POS, COPULA, SUPER = range(11)
DETERMINERS = frozenset("a an the this that these those its their another any some each every all both several "
                        "many few multiple".split())
NEGATIONS = frozenset("no not none neither nor without never".split())
POSITIONS = {"left": ("h", "left"), "right": ("h", "right"), "top": ("v", "top"), "upper": ("v", "top"),
             "bottom": ("v", "bottom"), "lower": ("v", "bottom"), "center": ("c", "center"),
             "centre": ("c", "center"), "middle": ("c", "center")}
COPULAS = frozenset("is are was were appears appear looks look seems seem".split())
# Words that make a sentence hypothetical or counterfactual: its claims are not about the image as it is.
HYPOTHETICAL = frozenset("if would could might removing removed remove leaves leave remain remaining remains imagine "
                         "suppose assuming unless".split())
PREPOSITIONS = frozenset("on at in near to toward towards along into".split())


def singular(word: str) -> str:
    """'circles' -> 'circle', 'boxes' -> 'box', 'buses' -> 'bus' (best effort, for lookups only)."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us")) and len(word) > 3:
        return word[:-1]
    return word


@dataclass
class Lexicon:
    """word -> (class, value); two-word nouns."""

    mode: str  # "shapes" or "coco"
    words: dict[str, tuple[int, object]] = field(default_factory=dict)
    pairs: dict[tuple[str, str], str] = field(default_factory=dict)
    heads: frozenset = frozenset()  # words that may end (or start) an object phrase: a quick first filter
    predicate_triggers: frozenset = frozenset()  # words a predicate may hang on: copulas, colours, "of"


def _noun_forms(word: str) -> list[str]:
    plural = word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        plural = word[:-1] + "ies"
    if word.endswith("fe"):
        plural = word[:-2] + "ves"
    return [word, plural]


@lru_cache(maxsize=4)
def lexicon(mode: str, extra_shapes: frozenset = frozenset(), extra_colors: frozenset = frozenset()) -> Lexicon:
    """The lexicon for a mode; the shapes world's may add shape/colour names found in its annotations."""
    lex = Lexicon(mode)
    words = lex.words
    coco_single = {c: c for c in COCO_CATEGORIES if " " not in c}
    coco_pairs = {tuple(c.split()): c for c in COCO_CATEGORIES if " " in c}
    synonyms = {w: cat for cat, text in COCO_SYNONYMS.items() for w in text.split()}
    if mode == "shapes":
        coco_single = {k: v for k, v in coco_single.items() if k not in _AMBIGUOUS_IN_SHAPES}
        synonyms = {k: v for k, v in synonyms.items() if v not in _AMBIGUOUS_IN_SHAPES}
    for word, category in {**coco_single, **synonyms}.items():
        for form in _noun_forms(word):
            words[form] = (NOUN, category)
    lex.pairs = {**coco_pairs, **COCO_SYNONYM_PAIRS}
    if mode == "shapes":
        for shape in SHAPES | extra_shapes:
            for form in _noun_forms(shape):
                words[form] = (NOUN, shape)
    for word in COLORS | extra_colors:
        if word not in words or mode == "shapes":
            words[word] = (COLOR, "gray" if word == "grey" else word)
    for word in COLOR_MODIFIERS:
        words.setdefault(word, (COLOR_MOD, word))
    for word in COLLECTIVES:
        for form in _noun_forms(word):
            words[form] = (COLLECTIVE, None)
    for word, size in SIZE_WORDS.items():
        words[word] = (SIZE, size)
    words.update({w: (SUPER, v) for w, v in SUPERLATIVES.items()})
    words.update({w: (NUM, n) for w, n in NUMBERS.items()})
    words.update({w: (DET, w) for w in DETERMINERS})
    words.update({w: (NEG, w) for w in NEGATIONS})
    words.update({w: (POS, v) for w, v in POSITIONS.items()})
    words.update({w: (COPULA, w) for w in COPULAS})
    lex.predicate_triggers = frozenset(w for w, (kind, _) in words.items() if kind in (COPULA, COLOR)) | \
        {"colored", "coloured", "painted", "of"}
    lex.heads = frozenset(w for w, (kind, _) in words.items() if kind in (NOUN, COLLECTIVE)) | {"one"} | \
        {first for first, _ in lex.pairs}
    return lex
