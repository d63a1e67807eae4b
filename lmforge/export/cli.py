"""`lmforge export` and `lmforge generate`."""
from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="checkpoint -> Hugging Face folder (config.json, model.safetensors, "
                                             "tokenizer files)")
    p.add_argument("checkpoint", help="step-N folder, or a run folder (its latest checkpoint)")
    p.add_argument("out_dir")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="weight dtype (default: the checkpoint's)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: RUN_DIR/tokenizer)")
    p.set_defaults(func=_export)

    g = subparsers.add_parser("generate", help="generate text from a checkpoint or exported folder (KV cache)")
    g.add_argument("checkpoint", help="step-N folder, run folder, or an exported HF folder")
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for a batch)")
    g.add_argument("--prompt-file", default=None, help="a text file, one prompt per line")
    g.add_argument("--chat", action="store_true", help="wrap each prompt as a ChatML user turn")
    g.add_argument("--system", default=None, help="with --chat: a system message")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--device", default="cpu")
    g.add_argument("--json", action="store_true", help="print a JSON list of {prompt, output}")
    g.set_defaults(func=_generate)


def _export(args) -> int:
    from lmforge.export.hf import export
    out = export(args.checkpoint, args.out_dir, dtype=args.dtype, tokenizer=args.tokenizer)
    print(f"exported to {out}")
    return 0


def chatml(user: str, system: str | None = None) -> str:
    turns = ([("system", system)] if system else []) + [("user", user)]
    return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns) + "<|im_start|>assistant\n"


def _generate(args) -> int:
    from lmforge.export.generate import generate, load_for_generation
    prompts = list(args.prompt)
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as f:
            prompts += [line.rstrip("\n") for line in f if line.strip()]
    if not prompts:
        print("lmforge generate: give --prompt TEXT (repeatable) or --prompt-file FILE", file=sys.stderr)
        return 2
    model, tok = load_for_generation(args.checkpoint, args.device)
    inputs = [chatml(p, args.system) if args.chat else p for p in prompts]
    stream = len(prompts) == 1 and not args.json
    on_token = (lambda i, piece: (sys.stdout.write(piece), sys.stdout.flush())) if stream else None
    if stream and not args.chat:
        sys.stdout.write(prompts[0])
    outs = generate(model, tok, inputs, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, top_p=args.top_p, stop=args.stop, seed=args.seed, on_token=on_token)
    if args.json:
        print(json.dumps([{"prompt": p, "output": o} for p, o in zip(prompts, outs)], ensure_ascii=False, indent=1))
    elif stream:
        sys.stdout.write("\n")
    else:
        for p, o in zip(prompts, outs):
            print(f"=== {p}\n{o}\n")
    return 0
