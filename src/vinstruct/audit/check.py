"""Checking one claim against the annotations: grounded, contradicted or unverifiable, and why.

Positions are judged from box centres with a small dead band, so that a claim is contradicted
only when the annotation clearly says otherwise:
  left / right      the centre's side of the vertical midline (|x - 0.5| <= 0.02: undecided)
  top / bottom      the same for the horizontal midline
  center / middle   within 0.2 of the middle on both axes; contradicted beyond 0.3 on either
  A left of B       A's centre left of B's by more than 0.02 (likewise right, above, below)
A phrase that fits several objects ("the circle" with two circles) is grounded when one of them
fits and contradicted only when none does. Real COCO has no colours, and positions of its
loosely named objects are not checked: those claims are unverifiable there.
"""

from __future__ import annotations

from vinstruct.audit.claims import Claim, Ref
from vinstruct.audit.scene import AuditObject, AuditScene

GROUNDED, CONTRADICTED, UNVERIFIABLE = "grounded", "contradicted", "unverifiable"
STATUSES = (GROUNDED, CONTRADICTED, UNVERIFIABLE)
MIDLINE_BAND = 0.02
CENTER_GROUNDED, CENTER_CONTRADICTED = 0.2, 0.3
RELATION_BAND = 0.02
LARGEST_RATIO = 1.2  # another object this much larger contradicts "X is the largest"


def check_claim(claim: Claim, scene: AuditScene) -> tuple[str, str, str]:
    """(status, evidence, kind): kind may narrow an object claim to 'color' (a circle is there, not a green one)."""
    if claim.hypothetical:
        return UNVERIFIABLE, "hypothetical statement", claim.kind
    if scene.mode == "coco" and claim.kind in ("color", "position", "relation", "size"):
        return UNVERIFIABLE, f"COCO annotations do not state {claim.kind}s", claim.kind
    checker = _CHECKERS[claim.kind]
    return checker(claim, scene)


def _listing(objects: list[AuditObject], limit: int = 4) -> str:
    shown = "; ".join(o.describe() for o in objects[:limit])
    return shown + (f"; ... ({len(objects)} in all)" if len(objects) > limit else "")


def _candidates(ref: Ref, scene: AuditScene) -> list[AuditObject]:
    """Objects a phrase may mean; its size word narrows them when that leaves any."""
    found = scene.matching(ref.noun, ref.color)
    if ref.size and len(found) > 1:
        sized = [o for o in found if o.size == ref.size]
        found = sized or found
    return found


def _object(claim: Claim, scene: AuditScene) -> tuple[str, str, str]:
    ref = claim.ref
    if scene.mode == "coco":
        present = any(o.noun == ref.noun for o in scene.objects) or ref.noun in scene.caption_nouns
        if claim.negated:
            return (CONTRADICTED, f"annotated: {ref.noun}", "object") if present else (GROUNDED, "", "object")
        if present:
            return GROUNDED, "", "object"
        return CONTRADICTED, f"no {ref.noun} among: {scene.inventory()}", "object"
    found = scene.matching(ref.noun, ref.color)
    if claim.negated:
        if found:
            return CONTRADICTED, f"annotated: {_listing(found)}", "object"
        return GROUNDED, "", "object"
    if found:
        return GROUNDED, "", "object"
    same_noun = scene.matching(ref.noun) if ref.noun else []
    kind = "color" if ref.color and (same_noun or ref.noun is None) else "object"
    if same_noun:
        return CONTRADICTED, f"no {ref.words()}; {ref.noun}: {_listing(same_noun)}", kind
    return CONTRADICTED, f"no {ref.words()} among: {scene.inventory()}", kind


def _count(claim: Claim, scene: AuditScene) -> tuple[str, str, str]:
    ref, stated = claim.ref, claim.value
    if scene.mode == "coco":
        if ref.noun is None:
            return UNVERIFIABLE, "a count of unnamed objects", "count"
        actual = sum(o.noun == ref.noun for o in scene.objects)
        said = scene.caption_counts.get(ref.noun, set())
        if stated == actual or stated in said or stated > 0 and actual == 0 and ref.noun in scene.caption_nouns:
            return GROUNDED, "", "count"
        return CONTRADICTED, f"{actual} {ref.noun} annotated", "count"
    found = scene.matching(ref.noun, ref.color)
    if ref.size and found and all(o.size for o in found):
        found = [o for o in found if o.size == ref.size]
    if claim.region is not None:
        verdicts = [_place(o, claim.region) for o in found]
        sure, possible = verdicts.count(GROUNDED), len(verdicts) - verdicts.count(CONTRADICTED)
        if stated < sure or stated > possible:
            return CONTRADICTED, f"{sure} {ref.words()} there: {_listing(found)}", "count"
        return (GROUNDED, "", "count") if sure == possible else (UNVERIFIABLE, "near the boundary", "count")
    if len(found) == stated:
        return GROUNDED, "", "count"
    return CONTRADICTED, f"{len(found)} {ref.words()}: {_listing(found) or 'none'}", "count"


def _color(claim: Claim, scene: AuditScene) -> tuple[str, str, str]:
    color = claim.value
    if claim.ref is None:
        if any(o.color == color for o in scene.objects):
            return GROUNDED, "", "color"
        return CONTRADICTED, f"no {color} object among: {scene.inventory()}", "color"
    found = scene.matching(claim.ref.noun, claim.ref.color)
    if not found:
        return UNVERIFIABLE, f"no {claim.ref.words()} to check", "color"
    if any(o.color == color for o in found):
        return GROUNDED, "", "color"
    return CONTRADICTED, _listing(found), "color"


def _axis(value: float, low_word: str, word: str) -> str:
    if abs(value - 0.5) <= MIDLINE_BAND:
        return UNVERIFIABLE
    return GROUNDED if (value < 0.5) == (word == low_word) else CONTRADICTED


def _place(obj: AuditObject, where: tuple) -> str:
    h, v, center = where
    verdicts = []
    if h:
        verdicts.append(_axis(obj.cx, "left", h))
    if v:
        verdicts.append(_axis(obj.cy, "top", v))
    if center:
        off = max(abs(obj.cx - 0.5), abs(obj.cy - 0.5))
        verdicts.append(GROUNDED if off <= CENTER_GROUNDED else CONTRADICTED if off > CENTER_CONTRADICTED else UNVERIFIABLE)
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return GROUNDED if verdicts and all(v == GROUNDED for v in verdicts) else UNVERIFIABLE


def _combine(verdicts: list[str]) -> str:
    if GROUNDED in verdicts:
        return GROUNDED
    return CONTRADICTED if verdicts and all(v == CONTRADICTED for v in verdicts) else UNVERIFIABLE


def _position(claim: Claim, scene: AuditScene) -> tuple[str, str, str]:
    found = _candidates(claim.ref, scene)
    if not found:
        return UNVERIFIABLE, f"no {claim.ref.words()} to place", "position"
    status = _combine([_place(o, claim.value) for o in found])
    return status, _listing(found) if status == CONTRADICTED else "", "position"


def _related(a: AuditObject, b: AuditObject, relation: str) -> str:
    delta = {"left": b.cx - a.cx, "right": a.cx - b.cx, "above": b.cy - a.cy, "below": a.cy - b.cy}[relation]
    if abs(delta) <= RELATION_BAND:
        return UNVERIFIABLE
    return GROUNDED if delta > 0 else CONTRADICTED


def _relation(claim: Claim, scene: AuditScene) -> tuple[str, str, str]:
    first, second = _candidates(claim.ref, scene), _candidates(claim.other, scene)
    pairs = [(a, b) for a in first for b in second if a is not b]
    if not pairs:
        return UNVERIFIABLE, "an object of the relation is not there", "relation"
    status = _combine([_related(a, b, claim.value) for a, b in pairs])
    return status, _listing(first + second) if status == CONTRADICTED else "", "relation"


def _size(claim: Claim, scene: AuditScene) -> tuple[str, str, str]:
    found = _candidates(claim.ref, scene)
    if not found:
        return UNVERIFIABLE, f"no {claim.ref.words()} to compare", "size"
    word = claim.value
    if word in ("largest", "smallest"):
        others = [o for o in scene.objects if o not in found]
        if not others:
            return GROUNDED, "", "size"
        if word == "largest":
            mine, rival = max(o.area for o in found), max(o.area for o in others)
            beaten = rival > LARGEST_RATIO * mine
        else:
            mine, rival = min(o.area for o in found), min(o.area for o in others)
            beaten = mine > LARGEST_RATIO * rival
        if beaten:
            return CONTRADICTED, f"areas: {mine:.3f} vs {rival:.3f} for another object", "size"
        return (GROUNDED, "", "size") if mine == (max if word == "largest" else min)(mine, rival) else \
            (UNVERIFIABLE, "about the same size", "size")
    if not all(o.size for o in found):
        return UNVERIFIABLE, "no size annotation", "size"
    if any(o.size == word for o in found):
        return GROUNDED, "", "size"
    return CONTRADICTED, "; ".join(f"{o.category} is {o.size}" for o in found[:4]), "size"


_CHECKERS = {"object": _object, "count": _count, "color": _color, "position": _position, "relation": _relation,
             "size": _size}
