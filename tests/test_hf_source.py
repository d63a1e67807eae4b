"""A Hugging Face folder is a checkpoint everywhere: pretrain/sft/grow start from it, eval and
generate read it, `lmforge import` turns it into our format, and its export gives back the
original's logits (transformers as the reference)."""
import math
import shutil

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from lmforge import config  # noqa: E402
from lmforge.config import ConfigError  # noqa: E402
from lmforge.model.load import HF, load_checkpoint, open_source  # noqa: E402
from conftest import make_token_dataset  # noqa: E402
from test_align_utils import losses, make_sft_file, make_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random LlamaForCausalLM saved by transformers (safetensors), with one of our
    tokenizers saved beside it by transformers (no lmforge side file)."""
    tmp = tmp_path_factory.mktemp("hf")
    tok_dir = make_tokenizer(tmp / "tok")
    hf_tok = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    out = tmp / "llama"
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    assert (out / "model.safetensors").is_file() and not (out / "lmforge_tokenizer.json").exists()
    return out


def hf_logits(folder, x):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with torch.no_grad():
        return model(x).logits


def our_logits(path, x):
    model, _ = load_checkpoint(path)
    with torch.no_grad():
        return model(x)[..., :model.cfg.vocab_size].float()


def ids(n=24, vocab=300, seed=0):
    return torch.randint(0, vocab, (2, n), generator=torch.Generator().manual_seed(seed))


def test_hf_folder_loads_with_transformers_logits(hf_dir):
    src = open_source(hf_dir)
    assert src.format == HF and src.tokenizer_dir == hf_dir and not src.has_optimizer
    assert src.model_cfg.n_layers == 2 and src.model_cfg.kv_heads == 2
    x = ids()
    torch.testing.assert_close(our_logits(hf_dir, x), hf_logits(hf_dir, x), atol=1e-5, rtol=1e-5)


def test_pickle_only_folder_is_refused_clearly(hf_dir, tmp_path):
    from lmforge.stagekit.source import source_checkpoint

    folder = tmp_path / "bin_only"
    folder.mkdir()
    shutil.copy2(hf_dir / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ConfigError, match="init.from_checkpoint: .*only pickle weights .*pytorch_model.bin"):
        source_checkpoint(str(folder))
    with pytest.raises(ConfigError, match="no complete checkpoint found .*Hugging Face folder"):
        source_checkpoint(str(tmp_path / "nothing"))


def test_pretrain_starts_from_hf_folder(hf_dir, tmp_path):
    from lmforge.stages.pretrain import PretrainConfig, build, run

    data = make_token_dataset(tmp_path / "tokens", vocab=128)
    args = [f"data={data}", f"init.from_checkpoint={hf_dir}", f"out_dir={tmp_path / 'pt'}", "train.steps=3",
            "train.seq_len=32", "train.micro_batch_size=2", "train.eval_every=0"]
    with pytest.raises(ConfigError, match="init.load_optimizer: .*Hugging Face folder: it has no optimizer state"):
        build(config.load(PretrainConfig, None, [*args, "init.load_optimizer=true"]), progress=False)
    cfg = config.load(PretrainConfig, None, args)
    trainer = build(cfg, progress=False)
    trainer.init_from(hf_dir)
    expected = open_source(hf_dir).state_dict()
    got = trainer.model.state_dict()
    assert all(torch.equal(got[k], expected[k].float()) for k in expected)
    summary = run(cfg, progress=False)
    assert summary["step"] == 3 and all(map(lambda v: v == v, losses(tmp_path / "pt")))
    assert load_checkpoint(tmp_path / "pt")[0].cfg == open_source(hf_dir).model_cfg


def test_sft_and_grow_from_hf_folder(hf_dir, tmp_path):
    from lmforge.stages.grow import GrowConfig, run as grow
    from lmforge.stages.sft import SFTConfig, run as sft

    data = make_sft_file(tmp_path / "sft.jsonl", n=12, max_turns=1)
    cfg = config.load(SFTConfig, None, [f"init.from_checkpoint={hf_dir}", f"data=[{data}]", f"out_dir={tmp_path / 's'}",
                                        "train.seq_len=64", "train.micro_batch_size=4", "max_steps=3",
                                        "train.optim.lr=1e-2"])
    summary = sft(cfg, progress=False)
    assert summary["step"] == 3 and (tmp_path / "s" / "tokenizer" / "tokenizer.json").is_file()
    ls = losses(tmp_path / "s")
    assert len(ls) == 3 and ls[-1] < ls[0]
    g = grow(config.load(GrowConfig, None, [f"init.from_checkpoint={hf_dir}", f"out_dir={tmp_path / 'g'}",
                                            "block=[0, 1]"]), progress=False)
    assert g["n_layers_after"] == 3 and (tmp_path / "g" / "tokenizer" / "tokenizer.json").is_file()


def test_eval_and_generate_read_hf_folder(hf_dir, tmp_path):
    from lmforge.infer.generate import generate, load_for_generation
    from lmforge.stages.eval import EvalConfig, run as evaluate
    from lmforge.tokenizer.train import load_tokenizer
    from test_eval_helpers import make_text_dataset

    data = make_text_dataset(tmp_path / "tokens", hf_dir, {"prose": ["What color is the sky? The sky is blue."] * 4},
                             val={"prose": ["What color is the sea? The sea is green."] * 2})
    out = evaluate(config.load(EvalConfig, None, [f"checkpoint={hf_dir}", f"out_dir={tmp_path / 'ev'}",
                                                  f"perplexity.data={data}", "mcq.shots=[0]", "device=cpu"]),
                   progress=False)
    # reference: each val document scored alone by transformers, every token but the first predicted
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True).eval()
    tok = load_tokenizer(hf_dir)
    nats, n = 0.0, 0
    for text in ["What color is the sea? The sea is green."] * 2:
        x = torch.tensor([tok.encode(text).ids + [tok.token_to_id("<|endoftext|>")]])
        with torch.no_grad():
            logp = hf(x).logits[0, :-1].log_softmax(-1)
        nats -= float(logp.gather(-1, x[0, 1:, None]).sum())
        n += x.shape[1] - 1
    assert out["ppl"] == pytest.approx(math.exp(nats / n), rel=1e-4)
    model, tok = load_for_generation(hf_dir)
    text = generate(model, tok, ["What color is the sky?"], max_new_tokens=5)[0]
    # greedy continuation equals transformers' greedy generate on the same folder
    enc = load_tokenizer(hf_dir).encode("What color is the sky?", add_special_tokens=False).ids
    ref = hf.generate(torch.tensor([enc]), max_new_tokens=5, do_sample=False, eos_token_id=None,
                      pad_token_id=0)[0, len(enc):]
    # (less a character cut off by max_new_tokens, which generate() does not show)
    assert text == tok.decode(ref.tolist(), skip_special_tokens=False).rstrip("\ufffd")


def test_import_writes_our_format_and_export_gives_back_the_logits(hf_dir, tmp_path):
    from lmforge.cli import main
    from lmforge.export.hf import export
    from lmforge.stagekit.source import InitConfig, load_source

    out = tmp_path / "imported"
    assert main(["import", str(hf_dir), str(out)]) == 0
    step = out / "checkpoints" / "step-0"
    assert (step / "meta.json").is_file() and (out / "tokenizer" / "lmforge_tokenizer.json").is_file()
    assert open_source(out).format == "lmforge"
    src = load_source(InitConfig(from_checkpoint=str(out)), "")     # ChatML + pad: SFT-ready
    assert src.info["pad_id"] == src.tok.token_to_id("<|pad|>")
    x = ids(seed=1)
    reference = hf_logits(hf_dir, x)
    torch.testing.assert_close(our_logits(out, x), reference, atol=1e-5, rtol=1e-5)
    export(out, tmp_path / "export")
    torch.testing.assert_close(hf_logits(tmp_path / "export", x), reference, atol=1e-5, rtol=1e-5)
    assert main(["import", str(hf_dir), str(out)]) == 0                  # a rerun skips
    assert main(["import", str(tmp_path / "nothing"), str(tmp_path / "o2")]) == 2


def test_dpo_longctx_and_needle_from_hf_folder(hf_dir, tmp_path):
    from lmforge.stages.dpo import DPOConfig, run as dpo
    from lmforge.stages.longctx import LongCtxConfig, run as longctx
    from lmforge.stages.needle import NeedleConfig, run as needle
    from test_align_utils import write_jsonl
    from test_eval_helpers import make_text_dataset

    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"What color is the {t}?", "chosen": f"The {t} is blue.",
                                                "rejected": "No."} for t in ("sky", "sea", "ice", "jay")])
    d = dpo(config.load(DPOConfig, None, [f"init.from_checkpoint={hf_dir}", f"data=[{pairs}]", "train.seq_len=64",
                                          "train.micro_batch_size=2", "max_steps=2", f"out_dir={tmp_path / 'dpo'}"]),
            progress=False)
    assert d["step"] == 2
    text = "The harbour was quiet and the boats rocked slowly against the old stone pier. " * 6
    tokens = make_text_dataset(tmp_path / "tokens", hf_dir, {"prose": [text] * 6}, val={"prose": [text]})
    lc = longctx(config.load(LongCtxConfig, None, [
        f"init.from_checkpoint={hf_dir}", f"data={tokens}", f"out_dir={tmp_path / 'long'}", "model.rope_theta=40000",
        "train.seq_len=96", "train.micro_batch_size=1", "train.steps=2", "min_doc_tokens=32",
        "train.schedule.warmup_steps=1", "train.eval_batches=1"]), progress=False)
    assert lc["step"] == 2 and lc["source"] == str(hf_dir)
    assert load_checkpoint(tmp_path / "long")[0].cfg.rope_theta == 40000
    nd = needle(config.load(NeedleConfig, None, [
        f"checkpoint={hf_dir}", f"haystack={tokens}", f"out_dir={tmp_path / 'needle'}", "rope=naive",
        "needle=' The key is {value}. '", "question=' So the key is'", "value_digits=3", "lengths=[48]",
        "depths=[50]", "distractors=0", "trials=1"]), progress=False)
    assert nd["checkpoint"] == str(hf_dir) and (tmp_path / "needle" / "needle.json").is_file()
