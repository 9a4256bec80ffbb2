"""`vinstruct predict`: batched answers to a question file (official model_vqa formats)."""

from __future__ import annotations

DESCRIPTION = """Answer every question of a question file with a model, in batches.

Questions: JSONL, one {"question_id", "image"?, "text", "category"?} per line (the official
LLaVA model_vqa format). Answers: JSONL, one {"question_id", "prompt", "text", "answer_id",
"model_id", "metadata"} per line. The run is resumable: question ids already in the answer
file are skipped, so rerunning after an interruption finishes the file without duplicates.
Questions whose image is missing are skipped and counted.

example:
  vinstruct predict --model runs/demo/stage2 --questions q.jsonl --image-dir world/images/test \\
      --answers answers.jsonl --batch-size 16 --max-new-tokens 32"""


def configure(parser) -> None:
    parser.add_argument("--model", required=True, help="checkpoint directory (vinstruct, llava-hf or official LLaVA)")
    parser.add_argument("--questions", required=True, help="question file (JSONL)")
    parser.add_argument("--answers", required=True, help="answer file to write or resume (JSONL)")
    parser.add_argument("--image-dir", default=None, help="folder the questions' image names are relative to")
    parser.add_argument("--batch-size", type=int, default=16, help="questions per generation batch (default 16)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass when temperature > 0")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="longest answer in tokens (default 128)")
    parser.add_argument("--conv-mode", default=None,
                        help="chat template (vicuna_v1, llama_2, chatml, mistral, plain); default: the model's own")
    parser.add_argument("--image-blind", action="store_true",
                        help="ask the questions without their images (the text-only baseline)")
    parser.add_argument("--model-id", default=None, help="model_id written in the answers (default: the directory name)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (per question, batch-independent)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import torch

    from vinstruct.eval.predict import PredictOptions, predict_files
    from vinstruct.model.generation import SamplingParams

    # Before the model loads: a bad value should not cost a minute of loading to be reported.
    SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p).check()
    if args.threads:
        torch.set_num_threads(args.threads)
    options = PredictOptions(batch_size=args.batch_size, temperature=args.temperature, top_p=args.top_p,
                             max_new_tokens=args.max_new_tokens, conv_mode=args.conv_mode,
                             image_blind=args.image_blind, model_id=args.model_id, seed=args.seed)
    stats = predict_files(args.model, args.questions, args.answers, args.image_dir, options, not args.quiet)
    rate = stats.answered / stats.seconds if stats.seconds else 0.0
    print(f"answered {stats.answered} ({rate:.1f}/s), already answered {stats.reused}, "
          f"skipped {len(stats.skipped)} -> {args.answers}")
    for skip in stats.skipped[:5]:
        print(f"  skipped {skip['question_id']!r}: {skip['reason']}")
    return 0
