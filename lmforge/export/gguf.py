"""`lmforge export --format gguf`: one GGUF file llama.cpp loads (architecture `llama`, or
`qwen2` for a model with q/k/v biases).

Written with the `gguf` package (the writer llama.cpp's own convert_hf_to_gguf.py uses),
from a lmforge checkpoint / run folder or an HF folder (config.json + model.safetensors +
tokenizer.json). What it holds, following convert_hf_to_gguf's LlamaModel:

- tensors under GGUF names (token_embd, blk.N.attn_q, ..., output_norm, output); Norm-Head
  folded and the padded vocabulary sliced off as in the HF export; a tied head writes no
  `output` tensor (llama.cpp then reuses token_embd). 1-D tensors stay float32.
- q/k rows permuted per head: llama.cpp's llama graph uses RoPE "NORM" mode, which rotates
  adjacent pairs (2i, 2i+1) at frequency i, where we (and HF) rotate (i, i + head_dim/2);
  row i goes to 2i and row i + head_dim/2 to 2i + 1. The same permutation on q and k leaves
  every attention score unchanged.
- llama.* hyperparameters, `rope.scaling.type linear` for position interpolation, and for
  Llama 3 scaling the `rope_freqs` tensor of per-frequency divisors.
- the byte-level BPE vocabulary (tokenizer.ggml.model "gpt2": tokens, types, merges,
  special ids, chat template) and `tokenizer.ggml.pre`, the pre-tokenizer llama.cpp must run.

- a model with q/k/v biases (Qwen2, Yi-style imports) as llama.cpp's `qwen2` architecture:
  the llama graph plus those biases, NEOX RoPE (the halves order we use: no permutation).

Refused, one line each in llama.cpp's terms, rather than written wrong: anything its llama /
qwen2 graphs cannot run (partial rotary, LayerNorm, QK-norm, GeGLU, ...: the reasons of
model/hf_archs.py), Dynamic NTK (llama.cpp has no such rope type: the file would silently run
plain RoPE), a sliding window (both graphs attend to the whole context), biases on the
attention output or the MLP, llama3 scaling with biases (qwen2 reads no rope_freqs), and a
tokenizer whose pre-tokenizer has no llama.cpp name.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from lmforge.model.convert import hf_config_dict, to_hf_state_dict
from lmforge.model.transformer import Transformer

FILE_TYPES = {"f32": 0, "f16": 1}   # gguf.LlamaFileType ALL_F32 / MOSTLY_F16


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """The llama.cpp `tokenizer.ggml.pre` value whose split equals this tokenizer's pre-tokenizer.

    lmforge's tokenizers (tokenizer/train.py) run Digits(individual_digits) and then GPT-2's
    byte-level regex. llama.cpp's "starcoder" pre-type (also used for StarCoder 2, Refact,
    SmolLM) is exactly that: regexes "\\p{N}" (every digit its own piece) then GPT-2's
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)" (llama-vocab.cpp,
    LLAMA_VOCAB_PRE_TYPE_STARCODER; convert_hf_to_gguf maps bigcode/starcoder2's tokenizer, whose
    tokenizer.json has this same Sequence, to it). A plain GPT-2 ByteLevel is "gpt-2". Anything
    else is refused: llama.cpp would split text differently and the model would see other tokens.
    """
    pre = tokenizer_json.get("pre_tokenizer") or {}

    def gpt2_bytelevel(p: dict) -> bool:
        return p.get("type") == "ByteLevel" and p.get("use_regex", True) and not p.get("add_prefix_space", False)

    if tokenizer_json.get("normalizer") is not None:
        raise ValueError("tokenizer.json: has a normalizer; GGUF byte-level BPE ('gpt2') applies none")
    if gpt2_bytelevel(pre):
        return "gpt-2"
    parts = pre.get("pretokenizers") or []
    if (pre.get("type") == "Sequence" and len(parts) == 2 and parts[0].get("type") == "Digits"
            and parts[0].get("individual_digits") and gpt2_bytelevel(parts[1])):
        return "starcoder"
    raise ValueError(f"tokenizer.json: pre_tokenizer {json.dumps(pre)[:120]} has no known llama.cpp "
                     "pre-tokenizer name; GGUF export refused")


def _vocab(tok_dir: Path, vocab_size: int) -> dict:
    """tokens, token types, merges and special ids of a byte-level BPE tokenizer folder."""
    from gguf import TokenType
    from tokenizers import Tokenizer

    data = json.loads((tok_dir / "tokenizer.json").read_text(encoding="utf-8"))
    if (data.get("model") or {}).get("type") != "BPE":
        raise ValueError(f"{tok_dir}/tokenizer.json: model type {data.get('model', {}).get('type')!r}; "
                         "GGUF export writes byte-level BPE only")
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    added = tok.get_added_tokens_decoder()
    tokens, types = [], []
    for i in range(vocab_size):
        piece = tok.id_to_token(i)
        if piece is None:   # a hole in the vocabulary: llama.cpp's converter writes [PADi] UNUSED
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(piece)
        types.append(TokenType.NORMAL if i not in added else
                     TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED)
    if tok.get_vocab_size(with_added_tokens=True) > vocab_size:
        raise ValueError(f"{tok_dir}: tokenizer has {tok.get_vocab_size()} tokens, the model only {vocab_size}")
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre_tokenizer_name(data)}


def _special_ids(tok_dir: Path, config: dict) -> dict:
    """bos/eos/pad ids, the end-of-turn id and the chat template of the tokenizer shipped in
    tok_dir, read from its own files (our side file, else the HF files: an HF-started run
    has no side file), as the HF export writes them (export/hf.py export_tokenizer): the
    template unchanged (chat_template.jinja before tokenizer_config.json), ChatML only for a
    ChatML vocabulary with none (an older ChatML template upgraded)."""
    from lmforge.align.chat_format import chat_format, end_of_turn_id, has_chatml, read_template
    from lmforge.tokenizer.train import CHATML_TEMPLATE, CHATML_TEMPLATE_V1, load_tokenizer, tokenizer_info

    tok = load_tokenizer(tok_dir)
    info = tokenizer_info(tok_dir, tok)
    ids = {k: info.get(f"{k}_id") if info.get(f"{k}_id") is not None else config.get(f"{k}_token_id")
           for k in ("bos", "eos", "pad")}
    chat = read_template(tok_dir)
    if chat == CHATML_TEMPLATE_V1 or (chat is None and has_chatml(tok)):
        chat = CHATML_TEMPLATE
    return {**ids, "eot": end_of_turn_id(chat_format(tok_dir, tok), tok), "chat_template": chat}


def gguf_arch(cfg) -> str:
    """llama.cpp's architecture for `cfg`: `qwen2` for q/k/v biases (llama.cpp's qwen2 graph is
    the llama graph plus those three biases, with NEOX RoPE: the halves order we and HF use,
    so no q/k permutation), else `llama`."""
    return "qwen2" if cfg.qkv_bias else "llama"


def check_gguf(model: Transformer) -> str:
    """The GGUF architecture of `model`; refuses, in one line in llama.cpp's terms, what its
    llama / qwen2 graphs cannot run (see module doc)."""
    from lmforge.model.hf_archs import why_not

    cfg = model.cfg
    arch = gguf_arch(cfg)
    rs = cfg.rope_scaling
    if cfg.sliding_window is not None:
        raise ValueError(f"GGUF export: sliding_window {cfg.sliding_window}: llama.cpp's {arch} architecture "
                         "attends to the whole context; export to HF instead")
    if cfg.o_bias or cfg.mlp_bias:
        raise ValueError("GGUF export: biases on the attention output or the MLP: llama.cpp's llama graph "
                         "takes none and its qwen2 graph only q/k/v biases; export to HF instead")
    reason = why_not(arch, cfg)
    if reason:
        raise ValueError(f"GGUF export: llama.cpp's {arch} architecture cannot run this model ({reason}); "
                         "export to HF instead")
    if rs is not None and rs.type == "dynamic":
        raise ValueError("GGUF export: Dynamic NTK rope scaling has no GGUF/llama.cpp equivalent "
                         "(the file would run plain RoPE); export to HF instead or drop rope_scaling")
    if rs is not None and rs.type == "llama3" and arch != "llama":
        raise ValueError(f"GGUF export: llama3 rope scaling with q/k/v biases: llama.cpp's qwen2 graph "
                         "reads no rope_freqs; export to HF instead")
    return arch


def _llama3_rope_freqs(cfg) -> np.ndarray:
    """Per-frequency divisors llama.cpp applies (rope_freqs): plain / llama3-scaled inverse frequency."""
    from lmforge.model.rope import base_inv_freq, compute_inv_freq
    plain = base_inv_freq(cfg.rotary_dim, cfg.rope_theta).double()
    return (plain / compute_inv_freq(cfg).double()).float().numpy()


def rope_pair_permutation(head_dim: int) -> torch.Tensor:
    """Row order of one head for llama.cpp: GGUF row 2i <- ours i, 2i + 1 <- ours i + head_dim/2."""
    half = head_dim // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).flatten()


def write_gguf(model: Transformer, tok_dir: Path, out_file: str | Path, file_type: str = "f32",
               name: str = "lmforge", special: dict | None = None) -> Path:
    """Write `model` (+ the tokenizer in tok_dir) as a llama / qwen2 GGUF file; returns its path."""
    import gguf

    if file_type not in FILE_TYPES:
        raise ValueError(f"file_type {file_type!r} is not one of {', '.join(FILE_TYPES)}")
    arch = check_gguf(model)
    cfg = model.cfg
    config = hf_config_dict(cfg, arch=arch)
    vocab = _vocab(tok_dir, cfg.vocab_size)
    special = special or _special_ids(tok_dir, config)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), arch=arch)
    w.add_name(name)
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_seq_len)
    w.add_embedding_length(cfg.d_model)
    w.add_feed_forward_length(cfg.ffn_dim)
    w.add_block_count(cfg.n_layers)
    w.add_head_count(cfg.n_heads)
    w.add_head_count_kv(cfg.kv_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.rope_theta))
    w.add_layer_norm_rms_eps(cfg.norm_eps)
    w.add_file_type(FILE_TYPES[file_type])
    if cfg.rope_scaling is not None and cfg.rope_scaling.type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(cfg.rope_scaling.factor)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("pad", w.add_pad_token_id),
                     ("eot", w.add_eot_token_id)):   # eot: end of generation besides eos (llama.cpp's eog set)
        if special.get(key) is not None:
            add(int(special[key]))
    w.add_add_bos_token(False)   # our tokenizers add no BOS (encode's callers decide)
    w.add_add_eos_token(False)
    if special.get("chat_template"):
        w.add_chat_template(special["chat_template"])
    for gname, arr in gguf_tensors(model, file_type, arch):
        w.add_tensor(gname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    return out


def gguf_tensors(model: Transformer, file_type: str = "f32", arch: str = "llama"):
    """(GGUF name, numpy array) for every tensor of the file, q/k rows permuted for the llama
    graph's adjacent-pair RoPE (module doc); qwen2's NEOX RoPE takes them as they are."""
    import gguf

    cfg = model.cfg
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2,
                                     cfg.n_layers)
    perm = rope_pair_permutation(cfg.head_dim)
    sd = to_hf_state_dict(model, torch.float32, arch=arch)
    for hf_name, t in sd.items():
        if arch == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            t = t.reshape(-1, cfg.head_dim, t.shape[-1])[:, perm].reshape(t.shape)
        gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ValueError(f"GGUF export: no GGUF name for tensor {hf_name}")
        arr = t.detach().numpy()
        if file_type == "f16" and arr.ndim > 1:
            arr = arr.astype(np.float16)
        yield gname, arr
    rs = cfg.rope_scaling
    if rs is not None and rs.type == "llama3":
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_rope_freqs(cfg)


def export_gguf(source: str | Path, out_file: str | Path, file_type: str = "f32",
                tokenizer: str | Path | None = None) -> Path:
    """A GGUF file from a lmforge checkpoint / run folder or an HF folder (config.json +
    model.safetensors + tokenizer.json)."""
    src = Path(source)
    if (src / "config.json").is_file() and ((src / "model.safetensors").is_file()
                                            or (src / "model.safetensors.index.json").is_file()):
        from lmforge.model.convert import load_hf
        model, tok_dir = load_hf(src).eval(), Path(tokenizer) if tokenizer else src
        name = src.name
    else:
        from lmforge.model.load import load_checkpoint, tokenizer_dir_of
        model, step_dir = load_checkpoint(src)
        tok_dir = Path(tokenizer) if tokenizer else tokenizer_dir_of(step_dir)
        name = step_dir.parent.parent.name if step_dir.parent.name == "checkpoints" else step_dir.name
    from lmforge.export.hf import usable_tokenizer_dir
    tok_dir = usable_tokenizer_dir(source, tok_dir, bool(tokenizer))
    return write_gguf(model, tok_dir, out_file, file_type, name=name)
