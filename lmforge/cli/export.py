"""`lmforge export`, `lmforge generate` and `lmforge chat`."""
from __future__ import annotations

import io
import json
import sys


def register(subparsers) -> None:
    from lmforge.cli.common import add_help_config
    p = subparsers.add_parser("export", help="checkpoint -> Hugging Face folder (config.json, model.safetensors, "
                                             "tokenizer files), or one GGUF file (--format gguf)")
    p.add_argument("checkpoint", help="step-N folder, a run folder (its latest checkpoint) or a recipe run "
                                      "folder (its last trained stage); with --format gguf also an HF folder")
    p.add_argument("out_dir", help="the folder to write (--format gguf: the .gguf file)")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf")
    p.add_argument("--gguf-type", choices=["f32", "f16"], default="f32", help="GGUF weight type")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="weight dtype (default: the checkpoint's)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: RUN_DIR/tokenizer)")
    p.add_argument("--adapter", default=None, metavar="DIR",
                   help="a LoRA run's checkpoint: write its adapters to DIR in PEFT's format "
                        "(adapter_model.safetensors, adapter_config.json) and OUT_DIR as their base model "
                        "(adapters off, not merged); without it a LoRA checkpoint is exported merged")
    add_help_config(p, "export")   # the recipe kind's keys (README: `lmforge STAGE --help-config`)
    p.set_defaults(func=_export)

    g = subparsers.add_parser("generate", help="generate text from a checkpoint or exported folder (KV cache)")
    g.add_argument("checkpoint", help="step-N folder, run folder, recipe run folder (its last model: the export "
                                      "or the last trained stage), or a Hugging Face folder")
    g.add_argument("--prompt", action="append", default=[], help="a prompt (repeat for a batch)")
    g.add_argument("--prompt-file", default=None, help="a text file, one prompt per line")
    g.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn in the tokenizer's own "
                                                       "chat format (ChatML for ours), stopping at its turn end")
    g.add_argument("--system", default=None, help="with --chat: a system message")
    g.add_argument("--character", default=None, metavar="CARD",
                   help="role-play: a character card YAML or a `lmforge character` package (implies --chat)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--device", default="cpu")
    g.add_argument("--json", action="store_true", help="print a JSON list of {prompt, output}")
    g.set_defaults(func=_generate)

    c = subparsers.add_parser("chat", help="multi-turn chat in the terminal, in the tokenizer's chat format "
                                           "(ChatML for ours; reads stdin, streams replies)")
    c.add_argument("checkpoint", help="step-N folder, run folder, recipe run folder (its last model: the export "
                                      "or the last trained stage), or a Hugging Face folder")
    c.add_argument("--system", default=None, help="a system message")
    c.add_argument("--character", default=None, metavar="CARD",
                   help="role-play: a character card YAML or a `lmforge character` package (persona, "
                        "retrieved knowledge and example dialogue in every prompt)")
    c.add_argument("--max-new-tokens", type=int, default=256)
    c.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    c.add_argument("--top-k", type=int, default=0)
    c.add_argument("--top-p", type=float, default=0.9)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--no-cache-reuse", action="store_true", help="recompute the whole conversation every turn")
    c.add_argument("--device", default="cpu")
    c.set_defaults(func=_chat)


def picked(command: str, path: str, hf: bool = True) -> str:
    """The model folder PATH means (a run or recipe run folder: its last model), saying which."""
    from lmforge.infer.pick import pick_model
    model, note = pick_model(path, hf=hf)
    if note:
        print(f"lmforge {command}: {note}", file=sys.stderr)
    return str(model)


def _export(args) -> int:
    args.checkpoint = picked("export", args.checkpoint, hf=args.format == "gguf")
    if args.format == "gguf":
        if args.adapter:
            print("lmforge export: --adapter writes a Hugging Face base folder + a PEFT adapter; "
                  "it does not combine with --format gguf", file=sys.stderr)
            return 2
        from lmforge.export.gguf import export_gguf
        try:
            out = export_gguf(args.checkpoint, args.out_dir, args.gguf_type, args.tokenizer)
        except ValueError as e:   # what GGUF cannot express: one line, not a traceback
            print(f"lmforge export: {e}", file=sys.stderr)
            return 2
        print(f"exported llama GGUF to {out}")
        return 0
    from lmforge.stages.export import ExportConfig, run
    cfg = ExportConfig(checkpoint=args.checkpoint, out_dir=args.out_dir, dtype=args.dtype,
                       tokenizer=args.tokenizer, adapter=args.adapter)
    summary = run(cfg, progress=False)   # no adapters, a layout PEFT cannot carry: ConfigError, one line
    if summary.get("skipped"):
        print(f"{args.out_dir} already exported (delete {args.out_dir}/DONE.json to export again)")
    elif args.adapter:
        print(f"exported {summary['arch']} base (LoRA adapters off) to {args.out_dir} and its PEFT adapter "
              f"(r {summary['lora_r']}, {summary['adapter_modules']} modules: "
              f"{', '.join(summary['target_modules'])}) to {args.adapter}")
    else:
        print(f"exported {summary['arch']} to {args.out_dir}")
    return 0


def chatml(user: str, system: str | None = None, fmt=None) -> str:
    """The prompt of one user turn, in ChatML or in chat format `fmt` (lmforge.align.chat_format)."""
    from lmforge.align.chat_template import render
    turns = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return (fmt.render if fmt is not None else render)(turns, add_generation_prompt=True)


def sampling_refused(command: str, args) -> bool:
    """Bad sampling options, said in one line before any model is loaded (or prompt printed)."""
    from lmforge.infer.generate import check_sampling_args
    try:
        check_sampling_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        print(f"lmforge {command}: {e}", file=sys.stderr)
        return True
    return False


def _chat(args) -> int:
    from lmforge.infer.chat import ChatSession, chat_loop, own_chat_format
    from lmforge.infer.generate import load_for_generation
    if sampling_refused("chat", args):
        return 2
    path = picked("chat", args.checkpoint)
    model, tok = load_for_generation(path, args.device)
    kwargs = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                  top_p=args.top_p, seed=args.seed, reuse_cache=not args.no_cache_reuse)
    try:
        if args.character:
            from lmforge.infer.character import Character, character_session
            char = Character.load(args.character)
            session = character_session(model, tok, char, **kwargs)
            if char.card.greeting:
                print(f"{char.card.name}: {char.card.greeting}")
        else:   # in the tokenizer's own chat format where it has one (a Llama 3 / Gemma HF folder)
            fmt, stops = own_chat_format(path, tok)
            session = ChatSession(model, tok, system=args.system, chat=fmt, stop_ids=stops, **kwargs)
    except ValueError as e:
        print(f"lmforge chat: {e}", file=sys.stderr)
        return 2
    return chat_loop(session, sys.stdin, sys.stdout)


def _generate(args) -> int:
    from lmforge.infer.generate import generate, load_for_generation
    prompts = list(args.prompt)
    if args.prompt_file:
        try:   # read whole (a prompt file is small): the byte offset below is the file's
            with open(args.prompt_file, "rb") as f:
                text = f.read().decode("utf-8")
            lines = [line.rstrip("\n") for line in io.StringIO(text, newline=None) if line.strip()]   # as open()
        except UnicodeDecodeError as e:   # the error boundary's line would not name the file
            print(f"lmforge generate: {args.prompt_file}: not UTF-8 text ({e.reason} at byte {e.start})",
                  file=sys.stderr)
            return 5
        if not lines:
            print(f"lmforge generate: {args.prompt_file}: no prompts (every line is blank)", file=sys.stderr)
            return 2
        prompts += lines
    if not prompts:
        print("lmforge generate: give --prompt TEXT (repeatable) or --prompt-file FILE", file=sys.stderr)
        return 2
    if sampling_refused("generate", args):
        return 2
    path = picked("generate", args.checkpoint)
    model, tok = load_for_generation(path, args.device)
    stop_ids = None
    if args.character:
        from lmforge.infer.character import Character
        char = Character.load(args.character)
        inputs = [char.prompt_text(p) for p in prompts]
        args.chat = True
    elif args.chat:   # as `lmforge chat`: a Llama 3 / Gemma HF folder in its own template, stopping at its turn end
        from lmforge.infer.chat import own_chat_format
        from lmforge.infer.generate import as_tokenizer, default_stop_ids
        fmt, stops = own_chat_format(path, tok)
        try:
            inputs = [chatml(p, args.system, fmt) for p in prompts]
        except ValueError as e:   # the template refuses the turns (Gemma: no system role)
            print(f"lmforge generate: {e}", file=sys.stderr)
            return 2
        stop_ids = (default_stop_ids(as_tokenizer(tok)) + stops) if stops else None
    else:
        inputs = prompts
    stream = len(prompts) == 1 and not args.json
    on_token = (lambda i, piece: (sys.stdout.write(piece), sys.stdout.flush())) if stream else None
    if stream and not args.chat:
        sys.stdout.write(prompts[0])
    try:
        outs = generate(model, tok, inputs, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        top_k=args.top_k, top_p=args.top_p, stop=args.stop, seed=args.seed, on_token=on_token,
                        stop_ids=stop_ids)
    except ValueError as e:   # bad sampling options: one line, not a traceback
        print(f"lmforge generate: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"prompt": p, "output": o} for p, o in zip(prompts, outs)], ensure_ascii=False, indent=1))
    elif stream:
        sys.stdout.write("\n")
    else:
        for p, o in zip(prompts, outs):
            print(f"=== {p}\n{o}\n")
    return 0
