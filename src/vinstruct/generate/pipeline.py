"""`vinstruct generate`: COCO-format set -> symbolic text -> teacher -> LLaVA instruction data.

    plan = plan_run(options)        # images, prompts and one Task per teacher request
    stats = generate(options)       # fetch what the cache lacks, assemble, filter, mix, write

Everything after the fetch is a pure function of the cache, so a re-run (or a run after
kill -9) writes exactly what an uninterrupted run writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from vinstruct.data.coco import CocoImage, CocoSet
from vinstruct.data.coco_checks import IMAGE_FILE_MISSING, InputProblem
from vinstruct.data.formats import append_jsonl, write_json, write_jsonl
from vinstruct.data.symbolic import symbolic_for_image
from vinstruct.endpoint.client import EndpointClient, EndpointConfig, RequestFailure, run_async
from vinstruct.endpoint.journal import Journal
from vinstruct.errors import VinstructError
from vinstruct.generate.filters import FilterConfig, check_sample
from vinstruct.generate.mix import mix_samples, stats_path
from vinstruct.generate.parse import ParseError, parse_reply
from vinstruct.generate.prompts import ALL_TYPES, TEACHER_TYPES, PromptSet, prompt_hash
from vinstruct.generate.samples import caption_samples, pack_by_image, stable_seed, teacher_sample
from vinstruct.generate.stats import RunStats, TypeStats

log = logging.getLogger(__name__)


def request_key(model: str, task_type: str, image_id, index: int, prompt_hash: str) -> str:
    """A teacher request's journal key: the same request in a later run finds its reply."""
    blob = json.dumps([model, task_type, str(image_id), index, prompt_hash], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


@dataclass
class GenerateOptions:
    coco_dir: Path
    out: Path
    split: str = "train"
    types: tuple[str, ...] = ALL_TYPES
    per_image: dict[str, int] = field(default_factory=dict)  # type -> samples per image (default 1)
    teacher: EndpointConfig | None = None
    prompts_dir: Path | None = None
    boxes_for: frozenset[str] = frozenset({"detail", "complex"})
    seed: int = 0
    shard: tuple[int, int] | None = None
    limit: int | None = None
    image_dir: Path | None = None
    image_root: Path | None = None  # image paths in the output are relative to this (default: the output's folder)
    cache: Path | None = None  # default: <out stem>.cache.jsonl beside the output
    mix: dict[str, float] | None = None
    pack: bool = False  # one multi-turn sample per image (teacher types; captions stay separate)
    filters: FilterConfig = field(default_factory=FilterConfig)
    skip_uncaptioned: bool = False
    on_bad_annotation: str = "skip"  # skip (and count) or fail on unusable annotations, image entries, image files
    progress: bool = True
    audit: bool = False  # check answers against the annotations; drop contradicted ones (vinstruct.audit)
    batch: object | None = None  # vinstruct.generate.batch_mode.BatchSettings: send through the Batch API


@dataclass
class Task:
    image: CocoImage
    type: str
    index: int
    messages: list[dict]
    seed: int
    key: str
    prompt_hash: str


@dataclass
class Plan:
    images: list[CocoImage]
    prompts: PromptSet
    tasks: list[Task]
    image_refs: dict
    skipped: list[InputProblem] = field(default_factory=list)  # input entries this run leaves out
    auditor: object | None = None  # vinstruct.audit.engine.Auditor when --audit


def parse_shard(spec: str) -> tuple[int, int]:
    """'2/8' -> (2, 8): the third of eight shards (0-based)."""
    index, sep, count = spec.partition("/")
    if not (sep and index.strip().isdigit() and count.strip().isdigit()):
        raise VinstructError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), got {spec!r}")
    i, n = int(index), int(count)
    if n < 1 or i >= n:
        raise VinstructError(f"--shard: expected I/N with 0 <= I < N (e.g. 0/4), got {spec!r}")
    return i, n


def companion(out: Path, suffix: str) -> Path:
    """data.json -> data.<suffix> (cache, partial output)."""
    return out.with_name(f"{out.stem}.{suffix}")


def _image_ref(image: CocoImage, base: Path) -> str:
    return Path(os.path.relpath(image.path.resolve(), base.resolve())).as_posix()


def _check_options(opts: GenerateOptions) -> None:
    unknown = [t for t in opts.types if t not in ALL_TYPES]
    if unknown or not opts.types:
        raise VinstructError(f"unknown type(s) {', '.join(unknown) or '(none given)'}; expected some of {', '.join(ALL_TYPES)}")
    for task_type, count in opts.per_image.items():
        if task_type not in ALL_TYPES:
            raise VinstructError(f"--per-image: unknown type {task_type!r}; expected one of {', '.join(ALL_TYPES)}")
        if count < 0:
            raise VinstructError(f"--per-image: {task_type} must be 0 or more, got {count}")
    if any(t in TEACHER_TYPES for t in opts.types) and opts.teacher is None:
        raise VinstructError(f"types {', '.join(t for t in opts.types if t in TEACHER_TYPES)} need a teacher: give --teacher-url")


def plan_run(opts: GenerateOptions) -> Plan:
    _check_options(opts)
    coco = CocoSet.load(opts.coco_dir, opts.split, opts.image_dir, require_captions=not opts.skip_uncaptioned,
                        on_bad_annotation=opts.on_bad_annotation)
    images = [img for img in coco.images if img.captions]
    if opts.shard:
        index, count = opts.shard
        images = images[index::count]
    if opts.limit is not None:
        images = images[: opts.limit]
    skipped = _problems_of_this_run(coco, images, opts.shard)
    images, missing = _with_image_files(images, coco, opts.on_bad_annotation)
    skipped += missing
    if skipped:
        reasons = Counter(p.reason for p in skipped)
        log.warning("skipping %d input entr%s (%s), e.g. %s; all are listed in the stats file", len(skipped),
                    "y" if len(skipped) == 1 else "ies", ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())),
                    skipped[0].describe())
    prompts = PromptSet(opts.prompts_dir, opts.types)
    base = opts.image_root or opts.out.parent
    refs = {img.id: _image_ref(img, base) for img in images}
    tasks = []
    params = {"max_tokens": opts.teacher.max_tokens, "temperature": opts.teacher.temperature} if opts.teacher else {}
    for image in images:
        for task_type in (t for t in opts.types if t in TEACHER_TYPES):
            with_boxes = task_type in opts.boxes_for
            messages = prompts.messages(task_type, symbolic_for_image(image, with_boxes=with_boxes), with_boxes)
            digest = prompt_hash(messages, params)
            for index in range(opts.per_image.get(task_type, 1)):
                key = request_key(opts.teacher.model, task_type, image.id, index, digest)
                seed = stable_seed(opts.seed, image.id, task_type, index) % 2**31
                tasks.append(Task(image, task_type, index, messages, seed, key, digest))
    auditor = None
    if opts.audit:
        from vinstruct.audit.engine import Auditor

        auditor = Auditor.for_set(coco)
    return Plan(images, prompts, tasks, refs, skipped, auditor)


def _problems_of_this_run(coco: CocoSet, images: list[CocoImage], shard: tuple[int, int] | None) -> list[InputProblem]:
    """The skipped entries this run reports, so that the merged stats of shards name each exactly once:
    an annotation goes with its image's shard; one that belongs to no usable image (a skipped image
    entry, an unknown image id) is dealt out to the shards in file order."""
    ids = {img.id for img in images}
    usable = {img.id for img in coco.images}
    own = [p for p in coco.problems if p.kind == "annotation" and p.image_id in ids]
    unattached = [p for p in coco.problems if not (p.kind == "annotation" and p.image_id in usable)]
    if shard:
        unattached = unattached[shard[0]::shard[1]]
    return own + unattached


def _with_image_files(images: list[CocoImage], coco: CocoSet,
                      on_bad: str) -> tuple[list[CocoImage], list[InputProblem]]:
    """(images whose file exists, a problem for each that does not): no sample may point at a missing file."""
    missing = [img for img in images if not img.path.is_file()]
    if not missing:
        return images, []
    instances = coco.root / "annotations" / f"instances_{coco.split}.json"
    if len(missing) == len(images):
        raise VinstructError(f"none of the {len(images)} image files of {instances} were found "
                             f"(e.g. {missing[0].path}); give --image-dir")
    if on_bad == "fail":
        raise VinstructError(f"{instances}: image {missing[0].id}: file {missing[0].path} not found")
    problems = [InputProblem("image", img.id, img.id, IMAGE_FILE_MISSING, f"file {img.path} not found")
                for img in missing]
    gone = {img.id for img in missing}
    return [img for img in images if img.id not in gone], problems


def _row(task: Task, completion, model: str) -> dict:
    return {"key": task.key, "model": model, "type": task.type, "image_id": task.image.id, "index": task.index,
            "prompt_hash": task.prompt_hash, "text": completion.text, "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "attempts": completion.attempts, "seconds": round(completion.seconds, 3)}


def trim_cut_sentence(text: str) -> str:
    """A reply cut at the token limit, up to the end of its last complete sentence."""
    end = max(text.rfind(mark) for mark in (".", "!", "?"))
    return text[:end + 1] if end >= 0 else text


def build_sample(plan: Plan, opts: GenerateOptions, task: Task, text: str, seen: set | None,
                 audit: Counter | None = None, truncated: bool = False) -> tuple[dict | None, str | None]:
    """(sample, None) or (None, reason) for one teacher reply; `audit` counts answers checked and removed."""
    if truncated:
        text = trim_cut_sentence(text)
    try:
        pairs = parse_reply(task.type, text)
    except ParseError as err:
        return None, err.reason
    reason = check_sample(task.type, pairs, opts.filters, seen)
    if reason:
        return None, reason
    if plan.auditor is not None:
        checked = [(q, a, plan.auditor.audit_turn(q, a, task.image).status) for q, a in pairs]
        pairs = [(q, a) for q, a, status in checked if status != "contradicted"]
        if audit is not None:
            audit["answers"] += len(checked)
            audit["contradicted"] += len(checked) - len(pairs)
        if not pairs:
            return None, "contradicted"
    sample = teacher_sample(task.image, plan.image_refs[task.image.id], task.type, task.index, pairs,
                            plan.prompts.detail_questions, opts.seed)
    return sample, None


async def fetch(tasks: list[Task], config: EndpointConfig, journal: Journal, on_row=None,
                progress: bool = True) -> tuple[dict[str, str], dict]:
    """Ask the teacher for every task; returns ({task key: failure reason}, client usage)."""
    failures: dict[str, str] = {}
    pending = iter(tasks)
    bar = tqdm(total=len(tasks), unit="req", desc="teacher", disable=not progress, dynamic_ncols=True)
    async with EndpointClient(config) as client:
        async def worker():
            for task in pending:  # a shared iterator: each task goes to exactly one worker
                try:
                    completion = await client.complete(task.messages, seed=task.seed)
                except RequestFailure as failure:
                    failures[task.key] = failure.reason
                else:
                    row = _row(task, completion, config.model)
                    journal.append(row)
                    if on_row:
                        on_row(task, row)
                bar.update(1)
                usage = client.usage
                bar.set_postfix_str(f"failed={len(failures)} tokens={usage.prompt_tokens + usage.completion_tokens} "
                                    f"${usage.cost:.3f}", refresh=False)

        async def syncer():
            while True:
                await asyncio.sleep(1.0)
                await journal.sync()

        # Twice as many workers as request slots, so that a worker sleeping before a retry leaves no slot idle.
        try:
            async with asyncio.TaskGroup() as group:
                sync_task = group.create_task(syncer())
                workers = [group.create_task(worker()) for _ in range(min(len(tasks), 2 * config.concurrency))]
                for w in workers:
                    await w
                sync_task.cancel()
        except BaseExceptionGroup as errors:
            # A fatal error in one worker (bad key, unknown model) stops them all: report that error itself.
            raise _first_error(errors) from None
        finally:
            bar.close()
            await journal.sync()
        return failures, client.usage.as_dict()


def _first_error(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, BaseExceptionGroup) else first


def _assemble(plan: Plan, opts: GenerateOptions, journal: Journal | None, failures: dict[str, str],
              stats: RunStats) -> list[dict]:
    """All samples in a fixed order (image, type, index), counting what was kept and why not."""
    tasks_by_image: dict = {}
    for task in plan.tasks:
        tasks_by_image.setdefault(task.image.id, []).append(task)
    samples = []
    for image in plan.images:
        seen: set[str] = set()  # questions kept for this image: no two samples ask the same
        for task_type in opts.types:
            type_stats = stats.types[task_type]
            if task_type == "caption":
                made = caption_samples(image, plan.image_refs[image.id], plan.prompts.caption_instructions,
                                       opts.per_image.get("caption", 1), opts.seed)
                type_stats.tasks += len(made)
                type_stats.kept += len(made)
                samples += made
                continue
            for task in (t for t in tasks_by_image.get(image.id, []) if t.type == task_type):
                type_stats.tasks += 1
                row = journal.get(task.key) if journal else None
                if row is None:
                    type_stats.failed[failures.get(task.key, "not_fetched")] += 1
                    continue
                type_stats.prompt_tokens += row.get("prompt_tokens", 0)
                type_stats.completion_tokens += row.get("completion_tokens", 0)
                truncated = row.get("finish_reason") == "length"
                type_stats.truncated += truncated
                sample, reason = build_sample(plan, opts, task, row["text"], seen, type_stats.audit, truncated)
                if sample is None:
                    type_stats.dropped[reason] += 1
                else:
                    type_stats.kept += 1
                    samples.append(sample)
    return samples


class _PartialOutput:
    """<out>.partial.jsonl: samples as they arrive, so a long run can be inspected (the final JSON is authoritative)."""

    def __init__(self, path: Path, initial: list[dict]):
        self.path = path
        write_jsonl(path, initial)
        self._handle = open(path, "a", encoding="utf-8")

    def add(self, sample: dict) -> None:
        append_jsonl(self._handle, sample, fsync=False)

    def close(self, remove: bool) -> None:
        self._handle.close()
        if remove:
            self.path.unlink(missing_ok=True)


def _fetch_missing(plan: Plan, opts: GenerateOptions, journal: Journal, stats: RunStats) -> dict[str, str]:
    """Ask for every task the journal lacks, keeping <out>.partial.jsonl current; returns failures by key."""
    pending = [t for t in plan.tasks if t.key not in journal]
    for task in plan.tasks:
        if task.key in journal:
            stats.types[task.type].cached += 1
    cached = [build_sample(plan, opts, t, journal.get(t.key)["text"], None,
                           truncated=journal.get(t.key).get("finish_reason") == "length")[0]
              for t in plan.tasks if t.key in journal]
    partial = _PartialOutput(companion(opts.out, "partial.jsonl"), [s for s in cached if s])

    def on_row(task, row):
        stats.types[task.type].fetched += 1
        sample, _ = build_sample(plan, opts, task, row["text"], None, truncated=row.get("finish_reason") == "length")
        if sample:
            partial.add(sample)

    failures: dict[str, str] = {}
    finished = False
    try:
        if pending and opts.batch is not None:
            from vinstruct.generate.batch_mode import fetch_batch

            failures, stats.client, stats.batch = fetch_batch(pending, opts.teacher, journal, _row, on_row, opts.batch,
                                                              opts.progress)
            if failures and opts.batch.fallback == "online":
                failures = _answer_online(pending, failures, opts, journal, on_row, stats)
        elif pending:
            failures, stats.client = run_async(fetch(pending, opts.teacher, journal, on_row, opts.progress))
        finished = True
    finally:
        partial.close(remove=finished)  # kept after a crash or Ctrl-C, for inspection
    return failures


def _answer_online(pending: list[Task], failures: dict[str, str], opts: GenerateOptions, journal: Journal, on_row,
                   stats: RunStats) -> dict[str, str]:
    """--batch-fallback online: the rows the batch rounds left unanswered, sent one by one; returns what still failed.

    Their tokens are billed at the online price: `stats.batch["online"]` holds that usage apart.
    """
    again = [task for task in pending if task.key in failures]
    still, usage = run_async(fetch(again, opts.teacher, journal, on_row, opts.progress))
    stats.batch["online_rows"], stats.batch["online_failed"] = len(again) - len(still), len(still)
    stats.batch["online"] = usage
    return still


def generate(opts: GenerateOptions) -> RunStats:
    """Run the whole pipeline; returns the statistics (also written beside the output)."""
    started = time.monotonic()
    plan = plan_run(opts)
    teacher = opts.teacher
    # In batch mode the provider bills the batch price: the stats count every token at it.
    share = opts.batch.discount if opts.batch is not None else 1.0
    stats = RunStats({t: TypeStats() for t in opts.types}, teacher.price_in * share if teacher else 0.0,
                     teacher.price_out * share if teacher else 0.0, images=len(plan.images),
                     skipped=[p.as_dict() for p in plan.skipped])
    journal = Journal(opts.cache or companion(opts.out, "cache.jsonl")) if plan.tasks else None
    try:
        failures = _fetch_missing(plan, opts, journal, stats) if journal is not None else {}
        samples = _assemble(plan, opts, journal, failures, stats)
    finally:
        if journal is not None:
            journal.close()
    if opts.mix:
        samples, stats.mixed = mix_samples(samples, opts.mix, opts.seed)
    if opts.pack:
        samples = pack_by_image(samples)
    stats.samples = len(samples)
    stats.seconds = time.monotonic() - started
    write_json(opts.out, samples)
    write_json(stats_path(opts.out), stats.as_dict())
    return stats
