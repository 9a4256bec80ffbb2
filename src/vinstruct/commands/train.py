"""`vinstruct train`: one training stage from a YAML preset plus --key=value overrides."""

from __future__ import annotations

DESCRIPTION = """Train a LLaVA model, one stage at a time.

  stage 1 (pretrain): vision encoder and LLM frozen, projector trained on image-caption
                      pairs with the "plain" template; writes mm_projector.safetensors too
  stage 2 (finetune): vision frozen, projector + LLM (or LoRA adapters) trained on
                      instruction data with the model's chat template

Options come from a YAML file (--config FILE or a preset name from configs/:
llava_pretrain, llava_finetune, llava_finetune_lora, world_pretrain, world_finetune)
and are overridden by --key=value (any option of the file, e.g. --lr=1e-4
--per_device_batch_size=4 --save_every=100). The same command runs distributed
under `torchrun --nproc_per_node N` (DDP; --strategy=fsdp for FSDP2;
--strategy=deepspeed --deepspeed_config=zero2|zero3 for DeepSpeed ZeRO, which
needs `pip install deepspeed` and GPUs).

examples:
  vinstruct train --stage pretrain --config world_pretrain --vision runs/base/vision \\
      --llm runs/base/llm --data runs/data/captions.json --output_dir runs/stage1
  vinstruct train --stage finetune --config world_finetune --init_from runs/stage1/model \\
      --data runs/data/instruct.json --output_dir runs/stage2
  vinstruct train --config world_finetune --output_dir runs/stage2 --resume
  torchrun --nproc_per_node 2 -m vinstruct train --config llava_finetune ...
  accelerate launch --num_processes 8 -m vinstruct train --config llava_finetune \\
      --strategy=deepspeed --deepspeed_config=zero3 ...

Outputs in output_dir: model/ (a checkpoint), metrics.jsonl, loss_curve.png,
checkpoints/step-*/ (resumable), train_config.json; see docs/train.md."""


def configure(parser) -> None:
    parser.add_argument("--config", help="YAML file or preset name (configs/<name>.yaml)")
    parser.add_argument("--stage", choices=("pretrain", "finetune"), help="training stage (overrides the file)")
    parser.add_argument("--vision", help="base vision encoder directory or name (new model)")
    parser.add_argument("--llm", help="base causal LM directory or name (new model)")
    parser.add_argument("--init_from", "--init-from", dest="init_from",
                        help="start from a vinstruct checkpoint (e.g. stage 1's model/)")
    parser.add_argument("--projector", dest="projector_file",
                        help="a stage-1 mm_projector.safetensors to load onto a model built from --vision/--llm")
    parser.add_argument("--data", help="training data: LLaVA JSON (or JSONL)")
    parser.add_argument("--output_dir", "--output-dir", "--out", dest="output_dir", help="where results go")
    parser.add_argument("--resume", action="store_true", default=None,
                        help="continue from the latest checkpoint in output_dir")
    parser.add_argument("--on-bad-sample", "--on_bad_sample", dest="on_bad_sample", choices=("skip", "fail"),
                        help="skip (and count) or fail on malformed samples, missing images, ...")
    parser.add_argument("--print-config", action="store_true", help="print the resolved options and exit")
    parser.add_argument("overrides", nargs="*", metavar="--key=value",
                        help="any option of the config (see docs/train.md), e.g. --lr=2e-4 --epochs=3")
    parser.allow_abbrev = False  # --key=value overrides must never be mistaken for a prefix of a flag


def parse_args(parser, argv: list[str]):
    """The flags above, and every other `--key=value` collected as a config override."""
    known, rest = parser.parse_known_args(argv)
    bad = [a for a in rest if not (a.startswith("--") and "=" in a)]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)} (other options are given as --key=value)")
    known.overrides = list(known.overrides or []) + rest
    return known


def run(args) -> int:
    import json
    import os

    from vinstruct.train.config import load_config, parse_overrides

    overrides = parse_overrides(list(args.overrides or []))
    for key in ("stage", "vision", "llm", "init_from", "projector_file", "data", "output_dir", "resume",
                "on_bad_sample"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    config = load_config(args.config, overrides)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from vinstruct.train import run_training

    result = run_training(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process reports
        print(f"model: {result.checkpoint}")
        print(f"metrics: {result.metrics}")
        if result.loss_curve:
            print(f"loss curve: {result.loss_curve}")
        if result.projector_file:
            print(f"projector: {result.projector_file}")
    return 0
