"""train.precision: fp8 -- the conversion plan (which linear layers go to float8, by a stated
rule), the real torchao conversion of exactly those layers, and the one-line refusals where
float8 cannot engage. The GPU step itself is measured by bench/gpu_suite.sh when a device is lent."""
import sys

import pytest
import torch

from lmforge import config
from lmforge.config import ConfigError
from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer
from lmforge.stages.pretrain import PretrainConfig, run
from lmforge.train import fp8


def meta_model(preset, **kw):
    with torch.device("meta"):
        return Transformer(ModelConfig.from_preset(preset, **kw))


def counts(decisions):
    return sum(d.convert for d in decisions), len(decisions)


def test_plan_on_the_index_shape():
    """Index-1.9B (d 2048, FFN 5888, 36 layers): tensorwise converts every projection, rowwise
    only the wide FFN inputs; the LM head stays in bf16 either way."""
    model = meta_model("index-1.9b")
    tw = fp8.plan(model, "tensorwise")
    assert counts(tw) == (36 * 7, 36 * 7 + 1)
    head = [d for d in tw if d.name == "lm_head"]
    assert head and not head[0].convert and "output" in head[0].reason
    rw = fp8.plan(model, "rowwise")
    assert counts(rw)[0] == 36 * 2
    assert {d.name.rsplit(".", 1)[-1] for d in rw if d.convert} == {"gate_proj", "up_proj"}


def test_plan_skips_small_layers_of_the_125m_shape():
    """small-125m (d 576): only the 1536-wide FFN input projections pass torchao's tensorwise
    threshold (K <= 4096 and N <= 1024 is skipped)."""
    d = fp8.plan(meta_model("small-125m"), "tensorwise")
    assert counts(d)[0] == 30 * 2
    assert all(x.reason == "below the tensorwise size threshold" for x in d if not x.convert and x.name != "lm_head")
    line = fp8.summary(d, "tensorwise")
    assert line.startswith("fp8 (tensorwise): 60 of 211 linear layers converted") and "1 output layer" in line


def test_dimensions_not_multiple_of_16_are_kept():
    m = torch.nn.Linear(4104, 2050, bias=False)
    assert not fp8.decide("layers.0.mlp.up_proj", m, "tensorwise").convert


def test_torchao_converts_exactly_the_planned_layers():
    pytest.importorskip("torchao")
    from torchao.float8.float8_linear import Float8Linear
    model = meta_model("index-1.9b", n_layers=2)
    decisions = fp8.convert(model, "tensorwise")
    swapped = {n for n, m in model.named_modules() if isinstance(m, Float8Linear)}
    assert swapped == {d.name for d in decisions if d.convert} and len(swapped) == 14
    assert type(model.lm_head) is torch.nn.Linear
    # the state dict keys are unchanged: checkpoints and exports read the same names
    assert set(model.state_dict()) == set(meta_model("index-1.9b", n_layers=2).state_dict())


def test_refused_in_one_line_without_a_float8_gpu(token_data, tmp_path):
    cfg = config.load(PretrainConfig, None, [f"data={token_data}", f"out_dir={tmp_path / 'r'}", "model.vocab_size=128",
                                             "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
                                             "model.max_seq_len=32", "train.seq_len=16", "train.steps=1",
                                             "train.precision=fp8", "train.device=cpu"])
    with pytest.raises(ConfigError, match="needs a CUDA GPU") as e:
        run(cfg, progress=False)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_refused_before_the_mixture_plan_prints(token_data, tmp_path, capsys):
    """With progress on and a curriculum, the refusal still comes first: nothing on stdout."""
    cfg = config.load(PretrainConfig, None, [f"data={token_data}", f"out_dir={tmp_path / 'r'}", "model.vocab_size=128",
                                             "model.d_model=32", "model.n_layers=1", "model.n_heads=2",
                                             "model.max_seq_len=32", "train.seq_len=16",
                                             "stages=[{name: a, steps: 1}, {name: b, steps: 1}]",
                                             "train.precision=fp8", "train.device=cpu"])
    with pytest.raises(ConfigError, match="fp8 needs"):
        run(cfg, progress=True)
    assert capsys.readouterr().out == ""


def test_refused_without_torchao(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchao.float8", None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[fp8\]'"):
        fp8.check_supported(torch.device("cpu"))


def test_unknown_recipe_refused(token_data, tmp_path):
    with pytest.raises(ConfigError, match="fp8_recipe"):
        config.load(PretrainConfig, None, [f"data={token_data}", "train.fp8_recipe=blockwise"])
