"""`vinstruct convert SRC DST`: move checkpoints between official LLaVA, llava-hf and vinstruct."""

from __future__ import annotations

import sys

DESCRIPTION = """Convert a LLaVA checkpoint directory between formats.

Sources (detected from config.json unless --from says):
  official   a directory written by the official LLaVA code (config.json with mm_* keys,
             model.* / lm_head.* / model.mm_projector.* weights in safetensors or .bin shards);
             stage-1 projector-only (mm_projector.bin) and LoRA (adapter_config.json +
             non_lora_trainables.bin) directories need --base
  llava-hf   a transformers LlavaForConditionalGeneration directory (hub or transformers 5.x layout)
  vinstruct  a vinstruct checkpoint
Targets:
  vinstruct  our checkpoint directory (safetensors)
  llava-hf   what transformers, vLLM and SGLang load; refuses what it cannot express
             (a linear projector, pooled features, <im_start>/<im_end> wrapping)

Examples:
  vinstruct convert --from official --vision clip-vit-large-patch14-336 llava-v1.5-7b runs/llava-7b
  vinstruct convert --to llava-hf --lora runs/stage2/adapter runs/stage2 runs/stage2-hf
  vinstruct convert --to llava-hf --pad-vocab-to 64 runs/demo/model runs/demo/model-hf"""


def configure(parser) -> None:
    parser.add_argument("src", help="source checkpoint directory")
    parser.add_argument("dst", help="destination directory (written atomically; replaced if it exists)")
    parser.add_argument("--from", dest="source", choices=["official", "llava-hf", "vinstruct"],
                        help="source format (default: detected from SRC/config.json)")
    parser.add_argument("--to", dest="target", choices=["vinstruct", "llava-hf"], default="vinstruct",
                        help="target format (default: vinstruct)")
    parser.add_argument("--vision", metavar="DIR",
                        help="official sources: local copy of the vision tower named by mm_vision_tower")
    parser.add_argument("--base", metavar="DIR",
                        help="official sources: base LLM for projector-only (stage 1) or LoRA checkpoints")
    parser.add_argument("--lora", metavar="DIR",
                        help="peft LoRA adapter directory (adapter_config.json + adapter_model.safetensors) "
                             "to merge into the weights")
    parser.add_argument("--template", help="chat template to record (official configs rarely name one; "
                                           "default vicuna_v1, or what a llava-hf export recorded)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                        help="weight dtype of the result (default: auto, as stored in SRC)")
    parser.add_argument("--pad-vocab-to", type=int, metavar="N",
                        help="llava-hf target: pad embedding and LM-head rows to a multiple of N (e.g. 64)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest weights file before sharding (default 5GB)")
    parser.add_argument("--strict", action="store_true",
                        help="read safetensors only: refuse pickled .bin weights instead of loading them "
                             "with torch.load(weights_only=True)")


def run(args) -> int:
    from vinstruct.model.convert import convert

    notes = convert(
        args.src, args.dst, source=args.source, target=args.target, dtype=args.dtype, lora=args.lora,
        pad_vocab_to=args.pad_vocab_to, max_shard_size=args.max_shard_size,
        vision=args.vision, base=args.base, template=args.template, strict=args.strict,
    )
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {args.target} checkpoint to {args.dst}")
    return 0
