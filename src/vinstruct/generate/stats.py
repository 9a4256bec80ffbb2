"""Statistics of a generation run: per type kept, dropped by reason, failed, tokens, cost; and the
input entries (annotations, images) that were skipped, each with its id and reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from vinstruct.endpoint.usage import cost_of


@dataclass
class TypeStats:
    tasks: int = 0  # teacher requests this run needs (caption: samples made)
    cached: int = 0  # replies found in the cache
    fetched: int = 0  # replies fetched now
    failed: Counter = field(default_factory=Counter)  # no reply after retries, by reason
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reply unusable, by reason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    truncated: int = 0  # replies cut at the token limit, kept up to their last full sentence
    audit: Counter = field(default_factory=Counter)  # --audit: answers checked / contradicted and removed

    def as_dict(self, price_in: float, price_out: float) -> dict:
        out = {"tasks": self.tasks, "cached": self.cached, "fetched": self.fetched, "kept": self.kept,
               "dropped": dict(sorted(self.dropped.items())), "failed": dict(sorted(self.failed.items())),
               "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
               "cost": round(cost_of(self.prompt_tokens, self.completion_tokens, price_in, price_out), 6)}
        if self.truncated:
            out["truncated"] = self.truncated
        if self.audit:
            out["audit"] = dict(sorted(self.audit.items()))
        return out


@dataclass
class RunStats:
    types: dict[str, TypeStats]
    price_in: float = 0.0
    price_out: float = 0.0
    images: int = 0
    samples: int = 0  # written to the output (after mixing)
    mixed: dict[str, int] = field(default_factory=dict)
    client: dict = field(default_factory=dict)  # all requests of this run, retries included
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)  # InputProblem.as_dict() of each entry left out
    batch: dict = field(default_factory=dict)  # --batch: rounds, batch ids, retried rows, discount

    def as_dict(self) -> dict:
        out = {"images": self.images, "samples": self.samples,
               "types": {t: s.as_dict(self.price_in, self.price_out) for t, s in self.types.items()},
               "mixed": self.mixed, "client": self.client, "seconds": round(self.seconds, 2),
               "skipped": skipped_summary(self.skipped)}
        if self.batch:
            out["batch"] = self.batch
        return out

    def table(self) -> str:
        return stats_table(self.as_dict())


def skipped_summary(entries: list[dict]) -> dict:
    """{"annotations": {reason: n}, "images": {reason: n}, "entries": [...]} of the skipped input."""
    counts: dict[str, Counter] = {"annotations": Counter(), "images": Counter()}
    for entry in entries:
        counts["annotations" if entry["kind"] == "annotation" else "images"][entry["reason"]] += 1
    return {kind: dict(sorted(c.items())) for kind, c in counts.items()} | {"entries": list(entries)}


def _skipped_line(skipped: dict) -> str | None:
    parts = []
    for kind, singular in (("annotations", "annotation"), ("images", "image")):
        counts = skipped.get(kind) or {}
        total = sum(counts.values())
        if total:
            reasons = ", ".join(f"{r}={n}" for r, n in counts.items())
            parts.append(f"{total} {singular if total == 1 else kind} ({reasons})")
    return f"skipped input: {'; '.join(parts)} (ids in the stats file)" if parts else None


def stats_table(stats: dict) -> str:
    """A plain-text summary of a stats dict (also of merged shard stats)."""
    lines = [f"{'type':<13}{'tasks':>7}{'cached':>8}{'kept':>8}{'tokens in':>11}{'tokens out':>11}{'cost':>10}"
             "  dropped / failed"]
    for task, s in stats["types"].items():
        problems = [f"{r}={n}" for r, n in s["dropped"].items()] + [f"failed:{r}={n}" for r, n in s["failed"].items()]
        problems += [f"truncated={s['truncated']}"] if s.get("truncated") else []
        problems += [f"audit:{r}={n}" for r, n in s.get("audit", {}).items()]
        lines.append(f"{task:<13}{s['tasks']:>7}{s['cached']:>8}{s['kept']:>8}{s['prompt_tokens']:>11}"
                     f"{s['completion_tokens']:>11}{s['cost']:>10.4f}  {', '.join(problems) or '-'}")
    lines.append(f"{stats['samples']} samples from {stats['images']} images")
    skipped_line = _skipped_line(stats.get("skipped") or {})
    if skipped_line:
        lines.append(skipped_line)
    client = stats.get("client") or {}
    if client.get("requests"):
        retries = ", ".join(f"{r}={n}" for r, n in client.get("retries", {}).items()) or "none"
        lines.append(f"requests this run: {client['requests']} (retries: {retries}; cost ${client.get('cost', 0):.4f})")
    batch = stats.get("batch")
    if batch:
        lines.append(f"batch API: {batch['requests']} requests in {len(batch['batches'])} batches over "
                     f"{batch['rounds']} round(s), {batch['retried_rows']} rows sent again; "
                     f"costs at {batch['discount']:g} x the online price")
        if "online_rows" in batch:
            online = batch.get("online") or {}
            lines.append(f"online fallback: {batch['online_rows']} rows the batches left answered online, "
                         f"{batch['online_failed']} still failed (${online.get('cost', 0):.4f} at the online price)")
    return "\n".join(lines)


def merge_stats(parts: list[dict]) -> dict:
    """Add up the stats of shards."""
    merged: dict = {"images": 0, "samples": 0, "types": {}, "mixed": {}, "client": {}, "seconds": 0.0}
    skipped: list[dict] = []
    for part in parts:
        merged["images"] += part.get("images", 0)
        skipped += (part.get("skipped") or {}).get("entries", [])
        merged["seconds"] = max(merged["seconds"], part.get("seconds", 0.0))
        for task, s in part.get("types", {}).items():
            into = merged["types"].setdefault(task, {"tasks": 0, "cached": 0, "fetched": 0, "kept": 0, "dropped": {},
                                                     "failed": {}, "prompt_tokens": 0, "completion_tokens": 0,
                                                     "cost": 0.0})
            for key in ("tasks", "cached", "fetched", "kept", "prompt_tokens", "completion_tokens", "cost"):
                into[key] += s.get(key, 0)
            into["truncated"] = into.get("truncated", 0) + s.get("truncated", 0)
            for key in ("dropped", "failed", "audit"):
                into.setdefault(key, {})
                for reason, n in s.get(key, {}).items():
                    into[key][reason] = into[key].get(reason, 0) + n
    merged["skipped"] = skipped_summary(skipped)  # each shard reports its own entries: none twice
    return merged
