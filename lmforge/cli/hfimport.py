"""`lmforge import HF_DIR OUT`: a Hugging Face folder -> an lmforge checkpoint + tokenizer folder."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("import", help="Hugging Face folder -> lmforge checkpoint (OUT/checkpoints/step-0, "
                                             "OUT/tokenizer)", description=__doc__)
    p.add_argument("hf_dir", help="a folder with config.json + *.safetensors (+ tokenizer.json)")
    p.add_argument("out_dir", help="the run folder to write")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the HF folder's tokenizer.json)")
    p.set_defaults(func=_import)


def _import(args) -> int:
    from lmforge.config import ConfigError
    from lmforge.export.hf_import import import_hf
    from lmforge.io.account import DataError

    try:
        s = import_hf(args.hf_dir, args.out_dir, args.tokenizer)
    except DataError:   # a damaged weights or tokenizer file: exit 5 naming it, not a config error
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if s.get("skipped"):
        print(f"{args.out_dir} already imported (delete {args.out_dir}/import.json to import again)")
        return 0
    m = s["model"]
    print(f"imported {s['n_params']:,} parameters ({m['n_layers']} layers, d_model {m['d_model']}, "
          f"vocab {m['vocab_size']}) to {s['checkpoint']}")
    if s["pad_is_eos"]:
        print("note: the tokenizer declares no pad token; eos is used for padding")
    if not s["has_chatml"] and not s.get("has_chat_template"):
        print("note: the tokenizer has neither a chat template nor <|im_start|>/<|im_end|>: "
              "sft/dpo need a chat format")
    return 0
