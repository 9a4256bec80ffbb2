"""Checkable claims in an assistant turn: objects, counts, colours, positions, relations, sizes.

    claims = extract_claims("It is on the left. There are two red circles.", read_question(q, lex), lex)

Each sentence is read on its own: its object phrases (text.py), its where-phrases
(positions.py), and the predicates that tie them together ("X is red", "X is a circle",
"X is the largest"). A predicate with no object phrase of its own ("It is red.", "Two.",
"On the left.", "No.") is about what the question asked ("the topic"), or about the object
the answer spoke of last. Claims in hypothetical sentences ("if ... would ...") are kept but
marked, so that they count as unverifiable instead of being checked against the image.
"""

from __future__ import annotations

from dataclasses import dataclass

from vinstruct.audit.positions import Location, find_locations
from vinstruct.audit.question import QuestionContext
from vinstruct.audit.text import Mention, find_mentions, sentences, tokenize
from vinstruct.audit.vocabulary import (COLLECTIVE, COLOR, COLOR_MOD, COPULA, HYPOTHETICAL, NOUN, NUM, POSITIONS, SIZE,
                                        SUPER, SUPERLATIVES, Lexicon)

CLAIM_KINDS = ("object", "count", "color", "position", "relation", "size")

# Words that may stand between an object phrase and what is said of it ("the star, in the top left corner").
_FILLER = frozenset(", ( ) is are was were sits sit lies lie located placed positioned situated appears appear can "
                    "be found seen stands stand standing sitting which that also just right directly slightly exactly "
                    "both all in the image picture photo scene somewhere clearly here you see".split())
_LEADING = frozenset(", and then while also so but whereas".split())
_PREDICATE_ADVERBS = frozenset("both all also entirely completely mostly clearly solid".split())
_NOT_BRIDGE = frozenset("a an any single see find spot notice contain contains show shows have has".split())
_BARE_COUNT_LEAD = frozenset("there is are i can see count only just exactly in total all".split())
_COLOR_NOUNS = frozenset("color colors colour colours".split())
_SUPERLATIVE_WORDS = frozenset(SUPERLATIVES)
_PREDICATIVE_AFTER = frozenset(", and or . ; : ( ) in is are appears color colors colour colours".split()) | {"\n"}


@dataclass(slots=True)
class Ref:
    noun: str | None
    color: str | None
    size: str | None = None

    @classmethod
    def of(cls, m: Mention) -> "Ref":
        return cls(m.noun, m.color, m.size)

    def words(self) -> str:
        return " ".join(w for w in (self.color, self.noun or "object") if w)


@dataclass(slots=True)
class Claim:
    kind: str  # one of CLAIM_KINDS
    ref: Ref | None  # what the claim is about (None: the image as a whole, e.g. "the colours are red and blue")
    value: object = None  # count, colour, (h, v, center), relation word, size word
    negated: bool = False
    other: Ref | None = None  # a relation's second object
    region: tuple | None = None  # a count limited to a place: (h, v, center)
    hypothetical: bool = False
    text: str = ""  # the words the claim was read from

    def key(self) -> tuple:
        ref = (self.ref.noun, self.ref.color) if self.ref else None
        other = (self.other.noun, self.other.color) if self.other else None
        return self.kind, ref, self.value, self.negated, other, self.region


def extract_claims(answer: str, ctx: QuestionContext, lex: Lexicon) -> list[Claim]:
    claims: list[Claim] = []
    topic = [ctx.topic] if ctx.topic is not None else []
    for number, tokens in enumerate(sentences(tokenize(answer))):
        if tokens[-1] == "?":
            continue  # a rhetorical question ("First, where is everything?") states nothing
        reader = _Sentence(tokens, lex, ctx, topic, first=number == 0)
        found = reader.read()
        if not HYPOTHETICAL.isdisjoint(tokens):
            for claim in found:
                claim.hypothetical = True
        claims += found
        subjects = [m for m in reader.mentions if m.names_something and not m.negated]
        if subjects:
            topic = subjects[:1]
    seen, unique = set(), []
    for claim in claims:
        key = claim.key()
        if key not in seen:
            seen.add(key)
            unique.append(claim)
    return unique


class _Sentence:
    def __init__(self, tokens: list[str], lex: Lexicon, ctx: QuestionContext, topic: list[Mention], first: bool):
        self.tokens, self.lex, self.ctx, self.topic, self.first = tokens, lex, ctx, topic, first
        self.kinds = [lex.words.get(t, (None, None)) for t in tokens]
        self.mentions = find_mentions(tokens, lex)
        self.starts = {m.start: m for m in self.mentions}
        if ";" in tokens or ":" in tokens:
            self.clause, clause = [], 0
            for tok in tokens:
                clause += tok in (";", ":")
                self.clause.append(clause)
        else:
            self.clause = [0] * len(tokens)  # one clause, the common case
        self.claims: list[Claim] = []
        self.placed: set[int] = set()  # ids of mentions given a place by a where-phrase

    def text(self, a: int, b: int) -> str:
        return " ".join(self.tokens[max(a, 0):b])

    def add(self, kind: str, ref: Ref | None, value=None, a: int = 0, b: int = 0, **extra) -> None:
        self.claims.append(Claim(kind, ref, value, text=self.text(a, b), **extra))

    def read(self) -> list[Claim]:
        self._negations()
        self._shape_answer()
        self._predicates()
        self._locations()
        self._superlatives()
        self._mention_claims()
        self._answers_to_question()
        return self.claims

    # ---- object phrases --------------------------------------------------------------------------------
    def _negations(self) -> None:
        """'there is not a black star', 'I do not see any dog': the phrase after 'not' is denied."""
        for m in self.mentions:
            j = m.start - 1
            while j >= 0 and self.tokens[j] in _NOT_BRIDGE:
                j -= 1
            if j >= 1 and self.tokens[j] in ("not", "never") and (
                    self.tokens[j - 1] in ("is", "are") and j >= 2 and self.tokens[j - 2] == "there"
                    or self.tokens[j - 1] in ("do", "does", "can", "could", "did") and j + 1 < m.start):
                m.negated = True

    def _mention_claims(self) -> None:
        for m in self.mentions:
            if not m.names_something:
                if m.count is not None and not m.negated:
                    count = m.count + 1 if m.other else m.count  # "a square and two other shapes": three in all
                    self.add("count", Ref(None, None), count, m.start, m.end, region=m.region)
                    if m.region and m.apposition:
                        self.add("count", Ref(None, None), count, m.start, m.end)
                continue
            if m.count is not None and not m.other:
                self.add("count", Ref.of(m), m.count, m.start, m.end, region=m.region)
                if m.region and m.apposition:
                    self.add("count", Ref.of(m), m.count, m.start, m.end)
            elif m.negated:
                self.add("object", Ref.of(m), None, m.start, m.end, negated=True)
            elif not m.other:
                self.add("object", Ref.of(m), None, m.start, m.end)
            if m.size and not m.negated and m.noun is not None:
                self.add("size", Ref.of(m), m.size, m.start, m.end)

    # ---- "X is red", "X is a circle", "X is small", "two of the shapes are red" --------------------------
    def _predicates(self) -> None:
        tokens, kinds, n = self.tokens, self.kinds, len(self.tokens)
        triggers = self.lex.predicate_triggers
        for i in [i for i, t in enumerate(tokens) if t in triggers]:
            tok, kind = tokens[i], kinds[i][0]
            if kind == COPULA or tok in ("colored", "coloured", "painted"):
                k = i + 1
                while k < n and tokens[k] in _PREDICATE_ADVERBS:
                    k += 1
                if k < n and kinds[k][0] in (COLOR, COLOR_MOD):
                    self._color_predicate(i, k)
                elif k < n and kinds[k][0] == SIZE and (k + 1 >= n or kinds[k + 1][0] not in (NOUN, COLLECTIVE, COLOR)):
                    if kinds[k][1]:
                        for subject in self.subject_before(i):
                            if subject.noun is not None:
                                self.add("size", Ref.of(subject), kinds[k][1], subject.start, k + 1)
                elif k in self.starts and tokens[k] in ("a", "an") and self.starts[k].noun is not None:
                    self._shape_predicate(i, self.starts[k])
            elif tok == "of" and i >= 1 and i + 2 < n and self._number(tokens[i - 1]) is not None:
                self._part_count(i - 1)
            elif kind == COLOR and i + 1 < n and tokens[i + 1] == ":" and (i == 0 or tokens[i - 1] in (";", ":")):
                self.add("color", None, kinds[i][1], i, i + 1)  # "Red: a red circle and a red star": a colour there
            elif kind == COLOR and i + 3 < n and tokens[i + 1] in ("appears", "occurs") and tokens[i + 3] in ("times", "time"):
                count = self._number(tokens[i + 2])
                if count is not None:
                    self.add("count", Ref(None, kinds[i][1]), count, i, i + 4)
        if not _COLOR_NOUNS.isdisjoint(tokens):
            self._colors_named()

    def _color_predicate(self, copula: int, k: int) -> None:
        tokens, kinds, n = self.tokens, self.kinds, len(self.tokens)
        colors = []
        while k < n and (kinds[k][0] in (COLOR, COLOR_MOD) or tokens[k] in ("and", "or", ",") and colors):
            if kinds[k][0] == COLOR:
                colors.append(kinds[k][1])
            k += 1
        if not colors or k < n and kinds[k][0] in (NOUN, COLLECTIVE):
            return  # attributive: "is a red circle" is read as a shape phrase
        subjects = self.subject_before(copula)
        before = self._skip_filler_back(copula - 1)
        if not subjects and before >= 0 and self.tokens[before] in _COLOR_NOUNS:
            owner = self.tokens[before - 1] if before >= 1 else ""
            subjects = self.topic if owner in ("its", "their") else []
            if not subjects:
                for color in colors:
                    self.add("color", None, color, before, k)
                return
        for subject in subjects:
            for color in colors:
                self.add("color", Ref(subject.noun, None if subject.noun else subject.color), color, subject.start, k)

    def _shape_predicate(self, copula: int, predicate: Mention) -> None:
        """'The red shape is a circle' / 'It is a heart': the subject's colour goes with the named shape."""
        for subject in self.subject_before(copula)[:1]:
            if subject.noun is None and subject.color and predicate.color is None:
                predicate.color = subject.color

    def _part_count(self, i: int) -> None:
        """'Two of the shapes are red' -> two red shapes; 'two of them are red' -> two red objects."""
        tokens, n = self.tokens, len(self.tokens)
        count = self._number(tokens[i])
        group, k = None, i + 2
        if k in self.starts:
            group = self.starts[k]
            k = group.end
        elif tokens[k] in ("them", "these", "those"):
            k += 1  # "two of them": of all the objects spoken of, read as all objects
        if count is None or k + 1 >= n or self.kinds[k][0] != COPULA or self.kinds[k + 1][0] != COLOR:
            return
        noun = group.noun if group is not None else None
        self.add("count", Ref(noun, self.kinds[k + 1][1]), count, i, k + 2)

    def _colors_named(self) -> None:
        """'The colors present are red and blue', 'each has its own color: red, blue': these colours are there."""
        tokens, kinds, n = self.tokens, self.kinds, len(self.tokens)
        for i, (kind, value) in enumerate(kinds):
            if kind == COLOR and (i + 1 >= n or tokens[i + 1] in _PREDICATIVE_AFTER) and \
                    not (i >= 1 and tokens[i - 1] in ("a", "an", "the")):
                self.add("color", None, value, i, i + 1)

    # ---- where ------------------------------------------------------------------------------------------
    def _locations(self) -> None:
        locations = find_locations(self.tokens)
        self._counts_in_place(locations)
        for index, loc in enumerate(locations):
            if loc.relation and not (loc.bare and self.ctx.kind != "relation"):
                self._relation(loc)
                continue
            subjects = self.subject_before(loc.start)
            if not subjects and self._leads_clause(loc):
                nxt = locations[index + 1].start if index + 1 < len(locations) else len(self.tokens)
                subjects = [m for m in self.mentions if loc.end <= m.start < nxt and not m.negated
                            and self.clause[m.start] == self.clause[loc.start] and id(m) not in self.placed]
            if not subjects:
                subjects = self._bare_answer_subject()
            value = (loc.h, loc.v, loc.center)
            for subject in subjects:
                self.placed.add(id(subject))
                if subject.count is not None and any(subject is m for m in self.mentions):
                    subject.region = value  # "two shapes on the left": a count of what is there
                    # "1 shape in the image, in the top right corner": where they all are, and how many in all
                    subject.apposition = "," in self.tokens[subject.end:loc.start]
                if subject.names_something:
                    self.add("position", Ref.of(subject), value, min(subject.start, loc.start), max(subject.end, loc.end))

    def _counts_in_place(self, locations: list[Location]) -> None:
        """'1 on the left against 2 on the right': numbers of objects in a part of the image."""
        inside = {i for m in self.mentions for i in range(m.start, m.end)}
        for loc in locations:
            i = loc.start - 1
            if loc.is_relation and not loc.bare or i < 0 or i in inside:
                continue
            count = self._number(self.tokens[i])
            if count is not None and not (i >= 1 and self.tokens[i - 1] in ("of", "than", "by")):
                self.add("count", Ref(None, None), count, i, loc.end, region=(loc.relation or loc.h, loc.v, loc.center))

    def _relation(self, loc: Location) -> None:
        subjects = self.subject_before(loc.start) or self._bare_answer_subject()
        if loc.object_at is not None:
            obj = self.starts.get(loc.object_at)
            if obj is None or obj.negated:
                return
            other = Ref.of(obj)
            end = obj.end
        elif self.ctx.other is not None:
            other, end = Ref.of(self.ctx.other), loc.end
        else:
            return
        for subject in subjects:
            if subject.names_something and (other.noun or other.color):
                self.add("relation", Ref.of(subject), loc.relation, min(subject.start, loc.start), end, other=other)

    def _leads_clause(self, loc: Location) -> bool:
        j = loc.start - 1
        while j >= 0 and self.tokens[j] in _LEADING and self.clause[j] == self.clause[loc.start]:
            j -= 1
        return j < 0 or self.tokens[j] in (";", ":") or self.clause[j] != self.clause[loc.start]

    def _bare_answer_subject(self) -> list[Mention]:
        """'On the left.' / 'To the left.' as the first sentence of an answer: about what the question asked."""
        if self.first and not any(m.names_something for m in self.mentions) and \
                self.ctx.kind in ("side", "level", "where", "relation", "superlative"):
            return [m for m in self.topic if m.names_something]
        return []

    # ---- subjects ----------------------------------------------------------------------------------------
    def _skip_filler_back(self, j: int) -> int:
        while j >= 0 and self.tokens[j] in _FILLER:
            j -= 1
        return j

    def subject_before(self, index: int) -> list[Mention]:
        """The object phrase a predicate at `index` is about: the phrase just before it, or a pronoun's referent."""
        j = self._skip_filler_back(index - 1)
        if j < 0:
            return []
        for m in self.mentions:
            if m.end == j + 1 and self.clause[m.start] == self.clause[index] and not m.negated:
                found = [m]
                plural_verb = any(t in ("are", "were") for t in self.tokens[m.end:index])
                earlier = [p for p in self.mentions if p.end == m.start - 1 and self.tokens[p.end] == "and"]
                if plural_verb and earlier and not earlier[0].negated:
                    found.insert(0, earlier[0])
                return found
        if self.tokens[j] in ("them", "these", "those") and j >= 1 and self.tokens[j - 1] == "of":
            return []  # "two of them are red" is a count (see _part_count), not a colour of the topic
        if self.tokens[j] in ("it", "they", "both", "its", "this", "that"):
            return list(self.topic)
        return []

    # ---- answers that lean on the question -----------------------------------------------------------------
    def _answers_to_question(self) -> None:
        ctx, tokens = self.ctx, self.tokens
        if not self.first or ctx.topic is None:
            return
        topic = ctx.topic
        if ctx.plain_existence and tokens[0] in ("yes", "no"):
            self.add("object", Ref.of(topic), None, 0, 1, negated=tokens[0] == "no")
        elif ctx.kind == "count":
            j = 0
            while j < len(tokens) and tokens[j] in _BARE_COUNT_LEAD:
                j += 1
            count = self._number(tokens[j]) if j < len(tokens) else None
            if count is not None and j not in self.starts and not (j + 1 < len(tokens) and tokens[j + 1] == "of"):
                self.add("count", Ref.of(topic), count, 0, j + 1)
        elif ctx.kind in ("side", "level", "where") and self._bare_place() is not None and topic.names_something:
            self.add("position", Ref.of(topic), self._bare_place(), 0, len(tokens))
        elif ctx.kind == "color" and self.kinds[0][0] == COLOR and topic.noun is not None and \
                (len(tokens) == 1 or self.kinds[1][0] not in (NOUN, COLLECTIVE)):
            self.add("color", Ref(topic.noun, None), self.kinds[0][1], 0, 1)

    def _shape_answer(self) -> None:
        """'What shape is the red object?' - 'A circle.': the circle is the red one."""
        topic = self.ctx.topic
        if self.first and self.ctx.kind == "shape" and topic is not None and topic.noun is None and topic.color:
            named = [m for m in self.mentions if m.noun is not None]
            if named and named[0].color is None:
                named[0].color = topic.color

    def _bare_place(self) -> tuple | None:
        """'Left.', 'Right side.', 'Top.': a one-word answer to a left-or-right question."""
        words = [t for t in self.tokens if t not in (".", "!", ",")]
        if not words or len(words) > 2 or words[0] not in POSITIONS or words[1:] not in ([], ["side"], ["half"]):
            return None
        axis, value = POSITIONS[words[0]]
        return (value if axis == "h" else None, value if axis == "v" else None, axis == "c")

    def _superlatives(self) -> None:
        tokens, kinds = self.tokens, self.kinds
        words = [] if _SUPERLATIVE_WORDS.isdisjoint(tokens) else \
            [(i, kinds[i][1]) for i in range(len(tokens)) if kinds[i][0] == SUPER]
        if not words and self.first and self.ctx.kind == "superlative" and self.ctx.superlative:
            named = [m for m in self.mentions if m.noun is not None and not m.negated]
            if named:
                self.add("size", Ref.of(named[0]), self.ctx.superlative, named[0].start, named[0].end)
            return
        for i, word in words:
            inside = next((m for m in self.mentions if m.start <= i < m.end), None)
            if inside is not None and inside.noun is not None:
                continue  # "the largest circle": compared with other circles only, not checked
            named = [m for m in self.mentions if m.noun is not None and not m.negated
                     and self.clause[m.start] == self.clause[i]]
            if len(named) == 1:
                self.add("size", Ref.of(named[0]), word, min(i, named[0].start), max(i + 1, named[0].end))

    def _number(self, tok: str) -> int | None:
        if tok.isdigit():
            return int(tok)
        entry = self.lex.words.get(tok)
        return entry[1] if entry and entry[0] == NUM else None
