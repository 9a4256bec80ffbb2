"""`vinstruct info DIR`: what a checkpoint is, without loading it into a chat."""

from __future__ import annotations

import json

DESCRIPTION = """Show a checkpoint's format, configuration and parameter counts.

Works on vinstruct checkpoints and, once converted or detected, on llava-hf and
official LLaVA directories."""


def configure(parser) -> None:
    parser.add_argument("model", help="checkpoint directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args) -> int:
    from vinstruct.model.io import detect_format, load_model

    fmt = detect_format(args.model)
    model = load_model(args.model)
    counts = {
        "vision_tower": sum(p.numel() for p in model.vision_tower.parameters()),
        "projector": sum(p.numel() for p in model.projector.parameters()),
        "llm": sum(p.numel() for p in model.llm.parameters()),
    }
    c = model.config
    info = {
        "format": fmt,
        "vision": c.vision_config.get("model_type"),
        "llm": c.text_config.get("model_type"),
        "projector": c.projector_type,
        "vision_feature_layer": c.vision_feature_layer,
        "vision_feature_select": c.vision_feature_select,
        "image_tokens": model.num_image_tokens,
        "template": c.template,
        "image_aspect": c.image_aspect,
        "tokenization": c.tokenization,
        "parameters": counts,
        "total_parameters": sum(counts.values()),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "parameters":
            for part, n in value.items():
                print(f"  {part:<22} {n:>14,}")
        else:
            print(f"{key:<24} {value:,}" if isinstance(value, int) else f"{key:<24} {value}")
    return 0
