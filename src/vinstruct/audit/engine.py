"""The auditor for one annotation set: a turn in, its claims and their verdicts out.

    auditor = Auditor.for_set(CocoSet.load(root, split))
    turn = auditor.audit_turn("What color is the star?", "It is red.", image)
    turn.status      # "grounded" | "contradicted" | "unverifiable"
    turn.verdicts    # [(claim, status, evidence, kind)]

A turn is contradicted when any of its claims is, grounded when at least one claim is
grounded and none is contradicted, and unverifiable when it states nothing checkable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vinstruct.audit.check import CONTRADICTED, GROUNDED, UNVERIFIABLE, check_claim
from vinstruct.audit.claims import Claim, extract_claims
from vinstruct.audit.question import QuestionContext, read_question
from vinstruct.audit.scene import AuditScene, build_scene, set_mode, world_vocabulary
from vinstruct.audit.vocabulary import Lexicon, lexicon
from vinstruct.data.coco import CocoImage, CocoSet


@dataclass
class Verdict:
    claim: Claim
    status: str
    evidence: str
    kind: str  # the claim's kind, or "color" for an object that is there in another colour


@dataclass
class TurnAudit:
    status: str
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def contradictions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == CONTRADICTED]


class Auditor:
    # Generated data repeats itself ("It is on the left.", "How many shapes are there?"): claims depend on the
    # words only, so they are read once per distinct (question, answer) and checked per image.
    CACHE_SIZE = 200_000

    def __init__(self, mode: str, lex: Lexicon):
        self.mode, self.lex = mode, lex
        self._scenes: dict[int, AuditScene] = {}
        self._claims: dict[tuple, list[Claim]] = {}
        self._questions: dict[str | None, QuestionContext] = {}

    @classmethod
    def for_set(cls, coco: CocoSet) -> "Auditor":
        return cls.for_categories(coco.categories)

    @classmethod
    def for_categories(cls, categories: list[str]) -> "Auditor":
        mode = set_mode(categories)
        shapes, colors = world_vocabulary(categories) if mode == "shapes" else (frozenset(), frozenset())
        return cls(mode, lexicon(mode, shapes, colors))

    def scene(self, image: CocoImage) -> AuditScene:
        scene = self._scenes.get(image.id)
        if scene is None:
            scene = self._scenes[image.id] = build_scene(image, self.mode)
        return scene

    def audit_turn(self, question: str | None, answer: str, image: CocoImage) -> TurnAudit:
        scene = self.scene(image)
        claims = self._claims.get((question, answer))
        if claims is None:
            context = self._questions.get(question)
            if context is None:
                context = read_question(question, self.lex)
                if len(self._questions) < self.CACHE_SIZE:
                    self._questions[question] = context
            claims = extract_claims(answer, context, self.lex)
            if len(self._claims) < self.CACHE_SIZE:
                self._claims[(question, answer)] = claims
        verdicts = [Verdict(claim, *check_claim(claim, scene)) for claim in claims]
        statuses = {v.status for v in verdicts}
        status = CONTRADICTED if CONTRADICTED in statuses else GROUNDED if GROUNDED in statuses else UNVERIFIABLE
        return TurnAudit(status, verdicts)
