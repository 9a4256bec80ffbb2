"""`vinstruct world`: generate the shapes world (PNG images + COCO annotations + captions)."""

from __future__ import annotations

DESCRIPTION = """Generate a shapes world: procedurally drawn scenes of coloured shapes, written as a
COCO-format dataset with splits train / val / test.

  DIR/images/<split>/*.png
  DIR/annotations/instances_<split>.json   boxes [x, y, w, h] in pixels, category "<color> <shape>",
                                           plus "shape", "color", "size" on every annotation
  DIR/annotations/captions_<split>.json    5 captions per image
  DIR/world.json                           seed, generator version, vocabulary, held-out combinations

The test split holds (shape, colour) combinations never seen in train (listed in world.json).
The same --seed gives byte-identical files.

example:
  vinstruct world --out runs/world --images 2000 --seed 0"""


def configure(parser) -> None:
    parser.add_argument("--out", required=True, help="output directory (must be empty or absent unless --overwrite)")
    parser.add_argument("--images", type=int, default=2000, help="total images, split 80/10/10 (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    import time

    from vinstruct.world import generate_world

    start = time.time()
    manifest = generate_world(args.out, args.images, seed=args.seed, size=args.size, overwrite=args.overwrite,
                              progress=not args.quiet)
    splits = ", ".join(f"{k} {v}" for k, v in manifest["splits"].items())
    held = ", ".join(f"{c} {s}" for s, c in manifest["held_out"])
    print(f"world written to {args.out} in {time.time() - start:.1f} s: {splits} images of "
          f"{manifest['image_size']}px; held out of train: {held}")
    return 0
