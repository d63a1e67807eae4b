"""Train a BPE tokenizer on clean documents, and the tokenizer folder format.

Choices, after the reports:
- Byte-level BPE (GPT-2's 256-symbol byte alphabet) rather than character BPE with
  `byte_fallback` and `<0xNN>` tokens (Yi, Llama). Both give "no character is unknown",
  but byte-level gets it by construction: every string is a byte string, the 256 byte
  symbols are always in the vocabulary, and the decoder is an exact inverse (no
  normalizer, no dummy prefix space), so encode/decode round-trips any text -- rare CJK,
  emoji, tabs, runs of spaces -- byte for byte. With byte fallback a rare character also
  costs 1-4 byte tokens, so compression is the same; what differs is that byte fallback
  needs the `<0xNN>` tokens inserted by hand (`tokenizers`' trainer does not make them)
  and a Metaspace normalizer whose round trip is not exact for leading spaces.
- Numbers split into single digits (Yi, Llama): `Digits(individual_digits=True)` runs
  before the byte-level regex, so no merge can ever span two digits.
- Chinese needs no spaces: the byte-level regex keeps a run of letters (`\\p{L}+`, which
  includes Han) as one pre-token and BPE learns multi-character words inside it.
- Special tokens take the lowest ids, in the configured order (`special_tokens[i]` has
  id i), so ChatML `<|im_start|>`/`<|im_end|>` and eos/pad ids are fixed across
  vocabulary sizes and retrainings.

A tokenizer folder holds `tokenizer.json` (HF `tokenizers`), `tokenizer_config.json` and
`special_tokens_map.json` (so `transformers.AutoTokenizer.from_pretrained(dir)` works
offline, with the ChatML chat template), and `lmforge_tokenizer.json`: the side file
with the special ids and `padded_vocab_size` (a multiple of 64, StableLM 2) that the
model config uses for its embedding size. The side file is written last: it marks the
folder complete.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from lmforge.config import check, to_dict
from lmforge.io.atomic import atomic_path, read_json_object, write_json

SIDE_FILE = "lmforge_tokenizer.json"
N_BYTES = 256

# ChatML (Yi, Qwen). Renders exactly what `lmforge.align` formats, so a model sees the
# same ids in SFT as through `tokenizer.apply_chat_template`. For TRL / transformers:
# - `{% generation %}` marks each assistant reply and its <|im_end|> (what our SFT trains on),
#   so apply_chat_template(..., return_assistant_tokens_mask=True) gives our reply mask;
# - content may be a string or a list of text parts ([{"type": "text", "text": ...}], joined
#   with nothing between them, as lmforge.align.formats does); any other part is refused;
# - `tools=` is refused (raise_exception): ChatML here has no tool-call format, and
#   silently dropping the tools would train or prompt the model without them.
CHATML_TEMPLATE = (
    "{% if tools %}{{ raise_exception('tools are not supported by this ChatML template') }}{% endif %}"
    "{% macro content(c) %}{% if c is string %}{{ c }}{% else %}{% for part in c %}"
    "{% if part['type'] != 'text' %}{{ raise_exception('only text content parts are supported') }}{% endif %}"
    "{{ part['text'] }}{% endfor %}{% endif %}{% endmacro %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ content(message['content']) + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}{{ content(message['content']) + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The template before the generation markers: folders saved with it get the current one on export.
CHATML_TEMPLATE_V1 = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


@dataclass
class TokenizerConfig:
    """`lmforge tokenizer train`: documents -> a tokenizer folder."""
    inputs: list[str] = field(default_factory=list)   # document files or folders
    out_dir: str = ""
    vocab_size: int = 32000
    min_frequency: int = 2
    special_tokens: list[str] = field(default_factory=lambda: [
        "<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"])  # id = position
    bos_token: str = "<|endoftext|>"
    eos_token: str = "<|endoftext|>"
    pad_token: str = "<|pad|>"
    chat_template: str = CHATML_TEMPLATE
    pad_multiple: int = 64          # embedding rows rounded up to this (StableLM 2)
    model_max_length: int = 4096
    max_bytes: int = 0              # train on at most this many text bytes (0 = all)
    overwrite: bool = False

    def __post_init__(self):
        check(len(self.inputs) > 0, "inputs", "give at least one document file or folder")
        check(bool(self.out_dir), "out_dir", "required (the tokenizer folder to write)")
        check(all(self.special_tokens), "special_tokens", "empty token")
        check(len(set(self.special_tokens)) == len(self.special_tokens), "special_tokens",
              "duplicate token")
        for key in ("bos_token", "eos_token", "pad_token"):
            check(getattr(self, key) in self.special_tokens, key,
                  f"{getattr(self, key)!r} is not one of special_tokens")
        for tok in CHATML_TOKENS:
            check(tok in self.special_tokens, "special_tokens", f"must contain ChatML {tok!r}")
        floor = len(self.special_tokens) + N_BYTES
        check(self.vocab_size >= floor, "vocab_size",
              f"{self.vocab_size} is below {len(self.special_tokens)} special tokens + "
              f"{N_BYTES} bytes = {floor}")
        check(self.vocab_size <= 2 ** 32, "vocab_size", "must fit in uint32")
        check(self.min_frequency >= 1, "min_frequency", "must be >= 1")
        check(self.pad_multiple >= 1, "pad_multiple", "must be >= 1")
        check(self.max_bytes >= 0, "max_bytes", "must be >= 0 (0 = all)")


def padded_vocab_size(n: int, multiple: int = 64) -> int:
    """Embedding rows for a vocabulary of n ids, rounded up (StableLM 2: 100289 -> 100352)."""
    return -(-n // multiple) * multiple


def build_tokenizer():
    """An untrained byte-level BPE with single-digit splitting (see module doc)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    # offsets only; bos/eos are added by the callers that want them (encode appends eos)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: list[str],
              min_frequency: int = 2, show_progress: bool = False):
    """Train the byte-level BPE on an iterable of strings; specials get ids 0..n-1."""
    from tokenizers import pre_tokenizers, trainers

    tok = build_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress and sys.stdout.isatty())   # off a terminal its bar prints bare newlines
    tok.train_from_iterator(texts, trainer)
    for i, s in enumerate(special_tokens):  # the trainer's contract; a fixed id is the point
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def iter_texts(inputs, errors=None, max_bytes: int = 0, stats: dict | None = None) -> Iterator[str]:
    """Texts of the documents under `inputs`, stopping after `max_bytes` (0 = all)."""
    from lmforge.io.readers import iter_documents

    stats = stats if stats is not None else {}
    stats.setdefault("docs", 0)
    stats.setdefault("bytes", 0)
    for doc in iter_documents(inputs, errors):
        text = doc["text"]
        stats["docs"] += 1
        stats["bytes"] += len(text.encode("utf-8"))
        yield text
        if max_bytes and stats["bytes"] >= max_bytes:
            return


# ---------------------------------------------------------------- the folder format


def vocab_len(tok) -> int:
    """Number of ids (max id + 1): model vocabulary and added tokens together."""
    return max(tok.get_vocab(with_added_tokens=True).values()) + 1


def save_tokenizer(tok, out_dir: str | Path, *, special_tokens: list[str], bos_token: str | None,
                   eos_token: str | None, pad_token: str | None, chat_template: str | None,
                   pad_multiple: int = 64, model_max_length: int = 4096,
                   extra: dict | None = None) -> dict:
    """Write tokenizer.json + the transformers files + the side file (last). Returns the side info."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SIDE_FILE).unlink(missing_ok=True)  # incomplete until rewritten below
    with atomic_path(out / "tokenizer.json") as tmp:
        tok.save(str(tmp))
    extra_specials = [t for t in special_tokens if t not in (bos_token, eos_token, pad_token)]
    specials_map = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token),
                                      ("pad_token", pad_token)) if v is not None}
    specials_map["additional_special_tokens"] = extra_specials
    hf_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **{k: v for k, v in specials_map.items() if k != "additional_special_tokens"},
        "unk_token": None,  # byte-level: nothing is unknown
        "extra_special_tokens": extra_specials,
        "model_max_length": model_max_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,  # would break the exact round trip
    }
    if chat_template:
        hf_config["chat_template"] = chat_template
    _write_json(out / "tokenizer_config.json", hf_config)
    _write_json(out / "special_tokens_map.json", specials_map)
    n = vocab_len(tok)
    info = {
        "vocab_size": n,
        "padded_vocab_size": padded_vocab_size(n, pad_multiple),
        "pad_multiple": pad_multiple,
        "special_tokens": {s: tok.token_to_id(s) for s in special_tokens},
        "bos_id": tok.token_to_id(bos_token) if bos_token else None,
        "eos_id": tok.token_to_id(eos_token) if eos_token else None,
        "pad_id": tok.token_to_id(pad_token) if pad_token else None,
        **(extra or {}),
    }
    _write_json(out / SIDE_FILE, info)
    return info


def _write_json(path: Path, obj) -> None:
    write_json(path, obj)   # temp sibling + rename (lmforge.io.atomic)


def tokenizer_file(path: str | Path) -> Path:
    """A tokenizer folder or a tokenizer.json path -> the tokenizer.json path."""
    p = Path(path)
    f = p / "tokenizer.json" if p.is_dir() else p
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no tokenizer.json (train one with `lmforge tokenizer train`)")
    return f


def load_tokenizer(path: str | Path):
    """Load `tokenizer.json` from a folder or file path; a file the tokenizers library cannot
    read (garbage, not UTF-8, another schema) is DataError naming it (exit 5), not a bare
    "stream did not contain valid UTF-8"."""
    from tokenizers import Tokenizer

    from lmforge.io.account import DataError
    f = tokenizer_file(path)
    try:
        return Tokenizer.from_file(str(f))
    except Exception as e:   # noqa: BLE001 - tokenizers raises a bare Exception for every parse error
        raise DataError(f"{f}: cannot be read by the tokenizers library: {str(e).splitlines()[0][:200]}") from None


def tokenizer_info(path: str | Path, tok=None) -> dict:
    """The side file if present, else what can be read from the HF files (eos/pad/bos ids)."""
    f = tokenizer_file(path)
    side = f.parent / SIDE_FILE
    if side.is_file():
        return read_json_object(side)
    tok = tok or load_tokenizer(f)
    hf = read_json_object(f.parent / "tokenizer_config.json")

    def tid(key):
        v = hf.get(key)
        v = v.get("content") if isinstance(v, dict) else v
        return tok.token_to_id(v) if isinstance(v, str) else None

    n = vocab_len(tok)
    eos, pad = tid("eos_token"), tid("pad_token")
    # Many released tokenizers (Llama, Mistral) declare no pad token; padding is never a
    # target and never attended to, so eos can stand in (as TRL and LLaMA-Factory do).
    return {"vocab_size": n, "padded_vocab_size": padded_vocab_size(n), "pad_multiple": 64,
            "bos_id": tid("bos_token"), "eos_id": eos, "pad_id": eos if pad is None else pad,
            "pad_is_eos": pad is None and eos is not None,
            "special_tokens": {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}}


def is_complete(out_dir: str | Path) -> bool:
    return (Path(out_dir) / SIDE_FILE).is_file()


def finished_folder(cfg) -> dict | None:
    """The info of a finished tokenizer folder at cfg.out_dir, None when there is none or `overwrite`
    (the skip rule of the tokenizer and extend stages)."""
    out = Path(cfg.out_dir)
    return tokenizer_info(out) if is_complete(out) and not cfg.overwrite else None


def train_folder(cfg: TokenizerConfig, progress: bool = True) -> dict:
    """Train a tokenizer on cfg.inputs into cfg.out_dir (the `tokenizer` stage, lmforge.stages.tokenizer)."""
    from lmforge.io.account import Account, first_rejects
    from lmforge.io.documents import ErrorSink
    from lmforge.io.readers import list_files

    out = Path(cfg.out_dir)
    list_files(cfg.inputs, ErrorSink())   # a missing or unsupported input: an error before any writing
    out.mkdir(parents=True, exist_ok=True)
    errors = ErrorSink(out / "rejects.jsonl")
    seen: dict = {}
    t0 = time.perf_counter()
    tok = train_bpe(iter_texts(cfg.inputs, errors, cfg.max_bytes, seen), cfg.vocab_size,
                    cfg.special_tokens, cfg.min_frequency, show_progress=progress)
    seconds = time.perf_counter() - t0
    errors.close()
    account = Account("tokenizer train", seen["docs"] + errors.total, seen["docs"], dict(errors.counts),
                      errors.path, unit="documents")
    account.require_kept(first_rejects(errors.records), what=", ".join(cfg.inputs))
    return {**save_tokenizer(
        tok, out, special_tokens=cfg.special_tokens, bos_token=cfg.bos_token,
        eos_token=cfg.eos_token, pad_token=cfg.pad_token, chat_template=cfg.chat_template,
        pad_multiple=cfg.pad_multiple, model_max_length=cfg.model_max_length,
        extra={"kind": "byte-level BPE, single digits", "trained_on": {
            "docs": seen["docs"], "bytes": seen["bytes"], "seconds": round(seconds, 3),
            "reader_errors": dict(errors.counts)}, "config": to_dict(cfg)}), "account": account.line()}
