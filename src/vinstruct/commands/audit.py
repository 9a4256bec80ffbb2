"""`vinstruct audit`: how grounded and how varied instruction data is, against its annotations."""

from __future__ import annotations

from pathlib import Path

DESCRIPTION = """Audit LLaVA instruction data against the COCO-format annotations of its images.

Every assistant answer is read for checkable claims - objects, counts, colours, positions,
relations and sizes - and each claim is checked against the boxes: grounded, contradicted
or unverifiable. Exact on the shapes world ("<colour> <shape>" categories); on real COCO
the 80 category names (with a small synonym table) and counts are checked. Diversity:
distinct-1/2/3, vocabulary, question types, answer lengths, near-duplicates.

Give several data files to compare them side by side. --out writes REPORT.md with PNG
plots and audit.json; --drop-contradicted writes the data without contradicted answers.

examples:
  vinstruct audit data/stage2.json --coco-dir world --split train --out runs/audit
  vinstruct audit scripted.json llm.json --coco-dir world --split train --out runs/compare
  vinstruct audit data/stage2.json --coco-dir world --split train --drop-contradicted data/stage2.clean.json
  vinstruct audit planted.json --coco-dir world --split train --planted planted.jsonl   # precision/recall"""


def configure(parser) -> None:
    parser.add_argument("data", nargs="+", type=Path, help="LLaVA JSON (or JSONL) data file(s)")
    parser.add_argument("--coco-dir", type=Path, required=True,
                        help="COCO-format set: DIR/annotations/instances_<split>.json (+ captions_<split>.json)")
    parser.add_argument("--split", default="train", help="split name in the annotation file names (default: train)")
    parser.add_argument("--image-dir", type=Path, help="where the images are (only their file names are matched)")
    parser.add_argument("--out", type=Path, help="write REPORT.md, PNG plots and audit.json to this folder")
    parser.add_argument("--names", help="comma list of names for the data files in the report (default: file stems)")
    parser.add_argument("--drop-contradicted", type=Path, metavar="OUT.json",
                        help="write the data without contradicted answers (with their questions); one data file only")
    parser.add_argument("--planted", type=Path, metavar="LOG.jsonl",
                        help="the planted-error log of `vinstruct teacher --plant-errors`: report precision/recall")
    parser.add_argument("--worst", type=int, default=10, help="most contradicted samples to show (default 10)")


def _names(args) -> list[str]:
    from vinstruct.errors import VinstructError

    if not args.names:
        stems = [p.stem for p in args.data]
        return stems if len(set(stems)) == len(stems) else [f"{i + 1}:{s}" for i, s in enumerate(stems)]
    names = [n.strip() for n in args.names.split(",")]
    if len(names) != len(args.data):
        raise VinstructError(f"--names: {len(names)} name(s) for {len(args.data)} data file(s)")
    return names


def _print_summary(named) -> None:
    for name, result, div in named:
        s = result.stats
        rate = f"{100 * s['grounded_rate']:.1f} %" if s["grounded_rate"] is not None else "n/a"
        skipped = sum(s["skipped_samples"].values())
        print(f"{name}: {s['audited_samples']:,} of {s['samples']:,} samples audited"
              + (f" ({skipped:,} skipped: {', '.join(f'{r}={n}' for r, n in s['skipped_samples'].items())})" if skipped else "")
              + f"; claims grounded {s['claims']['grounded']:,}, contradicted {s['claims']['contradicted']:,}, "
              f"unverifiable {s['claims']['unverifiable']:,} -> {rate} of checkable claims grounded; "
              f"{s['turns']['contradicted']:,} answers contradicted; distinct-2 {div['all']['distinct_2']}; "
              f"{s['samples_per_second']} samples/s")
        if s["skipped_turns"]:
            print(f"  turns skipped: {', '.join(f'{r}={n}' for r, n in s['skipped_turns'].items())}")


def run(args) -> int:
    import shlex
    import sys

    from vinstruct.audit.diversity import diversity
    from vinstruct.audit.run import audit_samples, drop_contradicted
    from vinstruct.data.coco import CocoSet
    from vinstruct.data.formats import load_llava_json, write_json
    from vinstruct.errors import VinstructError

    if args.drop_contradicted and len(args.data) != 1:
        raise VinstructError("--drop-contradicted works on one data file at a time")
    if args.planted and len(args.data) != 1:
        raise VinstructError("--planted works on one data file at a time")
    names = _names(args)
    coco = CocoSet.load(args.coco_dir, args.split, args.image_dir, require_captions=False)
    named = []
    for name, path in zip(names, args.data):
        result = audit_samples(load_llava_json(path), coco, str(path), args.worst)
        named.append((name, result, diversity(result.samples)))
    planted = None
    if args.planted:
        from vinstruct.audit.planted import score_planted

        planted = score_planted(named[0][1], args.planted, coco)
    _print_summary(named)
    if planted:
        print(f"planted errors: precision {planted['precision']}, recall {planted['recall']} "
              f"({planted['true_positives']} of {planted['planted_in_data']} planted answers flagged, "
              f"{planted['false_positives']} clean answers flagged)")
    if args.drop_contradicted:
        kept, counts = drop_contradicted(named[0][1])
        write_json(args.drop_contradicted, kept)
        print(f"wrote {args.drop_contradicted}: {len(kept):,} samples ({counts.get('answers_dropped', 0):,} contradicted "
              f"answers and {counts.get('samples_dropped', 0):,} emptied samples dropped)")
    if args.out:
        from vinstruct.audit.report import write_report

        command = "vinstruct audit " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["audit"] else ""
        report = write_report(named, args.out, planted, command, args.worst)
        print(f"wrote {report}")
    return 0
