"""LoRA for SFT and DPO: the module equals peft's, a LoRA run lowers the SFT loss while only the
adapters change, it resumes exactly, the merged export equals the adapted model's logits in
transformers, and the DPO reference with LoRA is the base with its adapters off."""
import copy
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from lmforge import config
from lmforge.config import ConfigError, to_dict
from lmforge.model import Transformer
from lmforge.model.load import copy_tokenizer, load_checkpoint, open_source
from lmforge.model.lora import (BaseOf, LoRAConfig, adapter_state, attach_lora, is_lora_key, lora_layers,
                                merge_lora)
from lmforge.train.checkpoint import save as save_checkpoint
from test_align_utils import losses, make_sft_file, make_tokenizer, tiny_model_cfg, write_jsonl

LORA = ["lora={r: 4, alpha: 8}"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 'pretrained' checkpoint whose head is not near-uniform (init_std 0.3): LoRA trains the
    blocks only, and through a frozen random head at std 0.02 no loss could fall far."""
    tmp = tmp_path_factory.mktemp("src")
    tok_dir = make_tokenizer(tmp / "tok")
    cfg = dataclasses.replace(tiny_model_cfg(json.loads((tok_dir / "lmforge_tokenizer.json").read_text())
                                             ["vocab_size"]), init_std=0.3)
    torch.manual_seed(0)
    run = tmp / "pretrained"
    save_checkpoint(run / "checkpoints", 1, Transformer(cfg), None, {"config": {"model": to_dict(cfg)}})
    copy_tokenizer(tok_dir, run)
    return run, tok_dir


def adapted(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    model = attach_lora(Transformer(tiny_model_cfg(300)), LoRAConfig(r=4, alpha=8, dropout=dropout))
    with torch.no_grad():
        for _, m in lora_layers(model):   # nonzero B, so the adapters do something
            m.lora_B.normal_(0, 0.05)
    return model.eval()


def test_forward_and_merge_equal_peft():
    peft = pytest.importorskip("peft")
    ours = adapted()
    base = Transformer(tiny_model_cfg(300))
    base.load_state_dict({k: v for k, v in ours.state_dict().items() if not is_lora_key(k)})
    ref = peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                       target_modules=list(LoRAConfig().target_modules)), base)
    with torch.no_grad():
        for name, m in lora_layers(ours):
            layer = ref.get_submodule(name)
            layer.lora_A["default"].weight.copy_(m.lora_A)
            layer.lora_B["default"].weight.copy_(m.lora_B)
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref.eval()(x), atol=1e-6, rtol=1e-6)
        for name, m in lora_layers(ours):
            layer = ref.get_submodule(name)
            layer.merge()
            torch.testing.assert_close(m.merged_weight(), layer.base_layer.weight, atol=1e-7, rtol=1e-6)
        plain = merge_lora(copy.deepcopy(ours))
        assert not lora_layers(plain) and all(p.requires_grad for p in plain.parameters())
        torch.testing.assert_close(plain(x), ours(x), atol=1e-5, rtol=1e-5)


def test_fresh_adapters_start_at_the_base_and_only_they_train():
    torch.manual_seed(0)
    base = Transformer(tiny_model_cfg(300)).eval()
    model = attach_lora(copy.deepcopy(base), LoRAConfig(r=2, target_modules=["q_proj", "v_proj"]))
    x = torch.randint(0, 300, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(x), base(x))    # B = 0: exactly the base
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(is_lora_key(n) and (".q_proj." in n or ".v_proj." in n) for n in trainable)
    assert len(trainable) == 2 * 2 * 2          # 2 layers x (q, v) x (A, B)


def sft_cfg(src_run, data, out, *extra):
    from lmforge.stages.sft import SFTConfig
    return config.load(SFTConfig, None, [f"init.from_checkpoint={src_run}", f"data=[{data}]", f"out_dir={out}",
                                         "train.seq_len=96", "train.micro_batch_size=4", "train.optim.lr=2e-2",
                                         "train.optim.weight_decay=0", *LORA, *extra])


def test_lora_sft_lowers_loss_changes_only_adapters_and_exports_merged(source, tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmforge.export.hf import export
    from lmforge.stages.sft import run

    src_run, _ = source
    data = make_sft_file(tmp_path / "sft.jsonl", n=24, max_turns=2)
    out = tmp_path / "lora"
    summary = run(sft_cfg(src_run, data, out, "epochs=4"), progress=False)
    ls = losses(out)
    assert len(ls) == summary["step"] >= 10 and sum(ls[-3:]) / 3 < 0.5 * sum(ls[:3]) / 3
    step = open_source(out)
    assert step.lora == LoRAConfig(r=4, alpha=8)
    saved = load_file(str(step.path / "model.safetensors"))
    base = load_file(str(open_source(src_run).path / "model.safetensors"))
    assert any(is_lora_key(k) for k in saved)
    assert all(torch.equal(saved[k], base[k]) for k in base)              # the base never moved
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in saved.items() if k.endswith("lora_B"))
    # the adapted model (base + adapters, unmerged) vs the merged export in transformers
    model = attach_lora(Transformer(step.model_cfg), step.lora)
    model.load_state_dict(saved, strict=False)
    x = torch.randint(0, step.model_cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    # float32 rounding only: logits reach ~8 here and each path is ~1e-5 from float64 (issue 29's
    # loss path moved the trained adapters by rounding and 1 logit of 16000 past atol=1e-5); a wrong
    # merge would be off by the adapters' whole contribution
    tol = {"atol": 5e-5, "rtol": 1e-5}
    with torch.no_grad():
        want = model.eval()(x)[..., :step.model_cfg.vocab_size]
        torch.testing.assert_close(load_checkpoint(out)[0](x)[..., :step.model_cfg.vocab_size], want, **tol)
    export(out, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, want, **tol)
    assert not any("lora" in k for k in load_file(str(tmp_path / "hf" / "model.safetensors")))


def test_lora_sft_resumes_exactly(source, tmp_path):
    from lmforge.stages.sft import build, run

    src_run, _ = source
    data = make_sft_file(tmp_path / "sft.jsonl", n=12, max_turns=1)
    extra = ["epochs=2", "lora.dropout=0.1", "train.ckpt_every=3", "train.micro_batch_size=2", "train.seq_len=48"]
    run(sft_cfg(src_run, data, tmp_path / "straight", *extra), progress=False)
    cfg = sft_cfg(src_run, data, tmp_path / "split", *extra)
    trainer = build(cfg, progress=False)
    for _ in range(3):
        trainer.train_step()
        trainer.step += 1
    trainer.save_checkpoint()
    del trainer                                           # "crash" after the step-3 checkpoint
    (tmp_path / "split" / "metrics.jsonl").write_text("")
    run(cfg, progress=False)
    a, b = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert len(a) > 4 and a[3:] == b
    sa = load_file(str(open_source(tmp_path / "straight").path / "model.safetensors"))
    sb = load_file(str(open_source(tmp_path / "split").path / "model.safetensors"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lora_config_errors(source, tmp_path):
    src_run, _ = source
    with pytest.raises(ConfigError, match="lora"):
        sft_cfg(src_run, "x.jsonl", tmp_path / "o", "lora.target_modules=[lm_head]")
    with pytest.raises(ConfigError, match="init.load_optimizer"):
        sft_cfg(src_run, "x.jsonl", tmp_path / "o", "init.load_optimizer=true")


def test_lora_dpo_reference_is_the_base_with_adapters_off(source, tmp_path):
    from lmforge.stages.dpo import DPOConfig, build, run
    from lmforge.train.objectives.dpo import sequence_logps

    src_run, _ = source
    recs = [{"prompt": f"What color is the {t}?", "chosen": f"The {t} is blue.", "rejected": f"No {t} here."}
            for t in ("sky", "sea", "lake", "ice", "jay", "vein", "iris", "denim")]
    data = write_jsonl(tmp_path / "pairs.jsonl", recs)
    args = [f"init.from_checkpoint={src_run}", f"data=[{data}]", "train.seq_len=64", "train.micro_batch_size=4",
            "train.optim.lr=2e-2", "reference=model", "beta=0.5", "epochs=3", *LORA]
    cfg = config.load(DPOConfig, None, [*args, f"out_dir={tmp_path / 'dpo'}"])
    trainer = build(cfg, progress=False)
    ref = trainer.objective.reference
    assert isinstance(ref, BaseOf) and ref._policy[0] is trainer.model
    first = trainer.train_step()
    assert first["margin_sum"] == pytest.approx(0.0, abs=1e-6)           # policy = reference at the start
    for _ in range(3):
        trainer.train_step()
    batch = trainer.objective.next_batch()             # the 5th of 6 micro-batches (8 pairs x 3 epochs / 4)
    base, _ = load_checkpoint(src_run)
    with torch.no_grad():
        got = sequence_logps(ref, batch["input_ids"], batch["labels"])
        want = sequence_logps(base, batch["input_ids"], batch["labels"])
        moved = sequence_logps(trainer.model, batch["input_ids"], batch["labels"])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)          # still the starting model
    assert not torch.allclose(moved, want, atol=1e-3)                    # while the policy moved
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if not is_lora_key(n))
    summary = run(config.load(DPOConfig, None, [*args, f"out_dir={tmp_path / 'dpo2'}"]), progress=False)
    recs = [json.loads(line) for line in (tmp_path / "dpo2" / "metrics.jsonl").read_text().splitlines()]
    acc = [r["accuracy_sum"] for r in recs if "accuracy_sum" in r]
    assert summary["step"] == len(acc) and acc[-1] >= acc[0]
    assert set(adapter_state(load_checkpoint(tmp_path / "dpo2")[0])) == set()   # loaded merged
