"""Mixing task types in given proportions, and merging the outputs of shards."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

from vinstruct.data.formats import load_llava_json, read_json, write_json
from vinstruct.errors import VinstructError
from vinstruct.generate.stats import merge_stats


def parse_ratios(spec: str) -> dict[str, float]:
    """'conversation=58,detail=23,complex=77' -> weights per type."""
    ratios: dict[str, float] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        try:
            weight = float(value) if sep else float("nan")
        except ValueError:
            weight = float("nan")
        if not name.strip() or not weight >= 0:
            raise VinstructError(f"--mix: expected TYPE=WEIGHT pairs like 'conversation=58,detail=23', got {part.strip()!r}")
        ratios[name.strip()] = weight
    if not any(ratios.values()):
        raise VinstructError("--mix: at least one type needs a positive weight")
    return ratios


def sample_type(sample: dict) -> str:
    """The task type encoded in our sample ids ('<image id>-<type>-<index>')."""
    parts = str(sample.get("id", "")).rsplit("-", 2)
    if len(parts) != 3:
        raise VinstructError(f"sample {sample.get('id')!r}: id does not say its type (expected <image>-<type>-<index>)")
    return parts[1]


def mix_samples(samples: list[dict], ratios: dict[str, float], seed: int = 0) -> tuple[list[dict], dict[str, int]]:
    """Keep as many samples as possible with type counts in the given proportions (no repeats).

    Returns the chosen samples (in their original order) and the count per type.
    """
    by_type: dict[str, list[int]] = {}
    for position, sample in enumerate(samples):
        by_type.setdefault(sample_type(sample), []).append(position)
    unlisted = sorted(set(by_type) - set(ratios))
    if unlisted:
        raise VinstructError(f"--mix: no weight for type(s) {', '.join(unlisted)} present in the data "
                             f"(give {unlisted[0]}=0 to leave it out)")
    total_weight = sum(w for w in ratios.values())
    shares = {t: w / total_weight for t, w in ratios.items() if w > 0}
    missing = [t for t in shares if not by_type.get(t)]
    if missing:
        raise VinstructError(f"--mix: type(s) {', '.join(missing)} have a weight but no samples")
    # The largest total for which every type has enough samples.
    total = min(len(by_type[t]) / share for t, share in shares.items())
    rng = random.Random(seed)
    chosen: set[int] = set()
    counts = {}
    for task, share in shares.items():
        n = min(len(by_type[task]), int(round(total * share)))
        chosen.update(rng.sample(by_type[task], n))
        counts[task] = n
    return [s for i, s in enumerate(samples) if i in chosen], counts


def stats_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".stats.json")


def merge_outputs(inputs: list[str | os.PathLike], out: str | os.PathLike, ratios: dict[str, float] | None = None,
                  seed: int = 0) -> dict:
    """Join shard outputs (and their stats) into one file; a sample id seen twice is an error."""
    if not inputs:
        raise VinstructError("merge: give at least one shard file")
    samples, origin = [], {}
    for path in inputs:
        for sample in load_llava_json(path):
            sid = sample["id"]
            if sid in origin:
                raise VinstructError(f"{path}: sample id {sid!r} is also in {origin[sid]} (overlapping shards?)")
            origin[sid] = path
            samples.append(sample)
    parts = [read_json(stats_path(p)) for p in inputs if stats_path(p).is_file()]
    stats = merge_stats(parts)
    lacking = [str(p) for p in inputs if not stats_path(p).is_file()]
    if lacking:
        stats["stats_missing_for"] = lacking
    mixed = {}
    if ratios:
        samples, mixed = mix_samples(samples, ratios, seed)
    stats.update({"samples": len(samples), "mixed": mixed, "merged_from": [str(p) for p in inputs]})
    write_json(out, samples)
    write_json(stats_path(out), stats)
    return stats


def type_counts(samples: list[dict]) -> dict[str, int]:
    return dict(Counter(sample_type(s) for s in samples))
