"""Trusting a teacher's data: are its answers grounded in the annotations, and how varied are they?

    from vinstruct.audit import audit_file, audit_summary, diversity
    result = audit_file("data/stage2.json", "world", "train")   # claims checked per answer, stats
    result.stats["grounded_rate"]

Modules: vocabulary (words), text (object phrases), positions (where-phrases), question
(what a question asks), claims (claims in an answer), scene + check (annotations and verdicts),
engine (one answer), run (one file), diversity, planted (precision/recall on planted errors),
report (REPORT.md + plots), summary (a section for other reports).
"""

from vinstruct.audit.diversity import diversity
from vinstruct.audit.engine import Auditor
from vinstruct.audit.run import AuditResult, audit_file, audit_samples, drop_contradicted
from vinstruct.audit.summary import audit_summary, write_audit_section

__all__ = ["Auditor", "AuditResult", "audit_file", "audit_samples", "audit_summary", "diversity", "drop_contradicted",
           "write_audit_section"]
