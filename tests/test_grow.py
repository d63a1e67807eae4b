"""Depth up-scaling (Yi-9B / SOLAR): layer similarity against a direct computation, block
choice, duplicated weights, the grow stage's checkpoint and continued pretraining from it."""
import json
import sys
from pathlib import Path

import pytest
import torch

from lmforge import config
from lmforge.config import ConfigError
from lmforge.stages.grow import GrowConfig, run
from lmforge.grow import depth
from lmforge.model import ModelConfig, Transformer
from lmforge.model.load import load_checkpoint
from lmforge.stages.pretrain import PretrainConfig
from lmforge.stages.pretrain import run as pretrain

sys.path.insert(0, str(Path(__file__).parent))
from test_eval_helpers import TINY, tiny_run  # noqa: E402


def small_model(n_layers=4, seed=0) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=64, d_model=32, n_layers=n_layers, n_heads=4, max_seq_len=32)).eval()


def packed_batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (2, 24), generator=g)
    doc_ids = torch.tensor([[0] * 10 + [1] * 14, [0] * 20 + [-1] * 4])    # second row ends in padding
    return {"input_ids": ids, "doc_ids": doc_ids}


def test_similarity_matches_direct_computation():
    model = small_model()
    batch = packed_batch()
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, args, out, i=i: seen.__setitem__(i, (args[0], out)))
             for i, layer in enumerate(model.layers)]
    with torch.no_grad():
        model(batch["input_ids"], doc_ids=batch["doc_ids"])
    for h in hooks:
        h.remove()
    valid = batch["doc_ids"] >= 0
    want = []
    for i in range(4):
        x, y = (t.double()[valid] for t in seen[i])
        want.append(float(((x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1))).mean()))
    got, n = depth.layer_similarity(model, [batch])
    assert n == int(valid.sum()) == 44
    assert got == pytest.approx(want, abs=1e-6)
    # over two batches: the token-weighted mean, not the mean of batch means
    small = {k: v[:1, :5] for k, v in batch.items()}
    both, n2 = depth.layer_similarity(model, [batch, small])
    s1, _ = depth.similarity_sums(model, batch)
    s2, _ = depth.similarity_sums(model, small)
    assert n2 == 49 and both == pytest.approx(((s1 + s2) / 49).tolist())


def silence(model: Transformer, i: int) -> None:
    """Make layer i an identity (its residual branches write nothing)."""
    with torch.no_grad():
        model.layers[i].self_attn.o_proj.weight.zero_()
        model.layers[i].mlp.down_proj.weight.zero_()


def test_identity_layers_have_similarity_one_and_are_chosen():
    model = small_model(n_layers=6)
    silence(model, 2)
    silence(model, 3)
    sims, _ = depth.layer_similarity(model, [packed_batch()])
    assert sims[2] == pytest.approx(1.0, abs=1e-6) and sims[3] == pytest.approx(1.0, abs=1e-6)
    assert max(s for i, s in enumerate(sims) if i not in (2, 3)) < 0.9999
    assert depth.choose_block(sims, 2) == (2, 4)
    assert depth.choose_block(sims, 1) == (2, 3)          # ties: the earliest
    assert depth.block_scores([0.5, 0.9, 0.8], 2) == pytest.approx([0.7, 0.85])
    with pytest.raises(ValueError):
        depth.choose_block(sims, 7)


def test_layer_mapping_yi_9b():
    m = depth.layer_mapping(32, 12, 28)                   # Yi-6B -> Yi-9B
    assert len(m) == 48 and m[:28] == list(range(28)) and m[28:44] == list(range(12, 28))
    assert m[44:] == list(range(28, 32))
    with pytest.raises(ValueError, match="outside"):
        depth.layer_mapping(32, 20, 40)


def test_grown_model_has_duplicated_weights():
    model = small_model(n_layers=4)
    grown = depth.grow_model(model, 1, 3)
    assert grown.cfg.n_layers == 6 and len(grown.layers) == 6
    old, new = model.state_dict(), grown.state_dict()
    for j, i in enumerate([0, 1, 2, 1, 2, 3]):
        for name, t in model.layers[i].state_dict().items():
            assert torch.equal(new[f"layers.{j}.{name}"], t)
    for k in ("embed_tokens.weight", "norm.weight", "lm_head.weight"):
        assert torch.equal(new[k], old[k])
    # copies are separate tensors: training one does not move the other
    assert grown.layers[1].mlp.up_proj.weight.data_ptr() != grown.layers[3].mlp.up_proj.weight.data_ptr()
    # duplicating identity layers leaves the function unchanged
    silence(model, 2)
    grown = depth.grow_model(model, 2, 3)
    x = packed_batch()["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(grown(x), model(x))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("src"), steps=2, extra=["model.n_layers=4"])


def grow_cfg(source, out, *extra) -> GrowConfig:
    return config.load(GrowConfig, None, [f"init.from_checkpoint={source}", f"data={source.parent / 'tokens'}",
                                          f"out_dir={out}", "calib_tokens=200", "seq_len=32", *extra])


def test_grow_stage_and_continued_training(source, tmp_path):
    out = tmp_path / "grow"
    summary = run(grow_cfg(source, out, "add_layers=2"), progress=False)
    assert summary["n_layers_before"] == 4 and summary["n_layers_after"] == 6
    sim = json.loads((out / "similarity.json").read_text())
    sims = [r["cosine"] for r in sim["layers"]]
    assert len(sims) == 4 and summary["calibration_tokens"] >= 200
    assert tuple(summary["block"]) == depth.choose_block(sims, 2)
    assert (out / "similarity.png").stat().st_size > 1000 and "| 3 |" in (out / "similarity.md").read_text()
    grown, step_dir = load_checkpoint(out)                # model config read from the checkpoint
    src, _ = load_checkpoint(source)
    assert grown.cfg.n_layers == 6 and (out / "tokenizer" / "tokenizer.json").is_file()
    mapping = json.loads((out / "grow.json").read_text())["mapping"]
    for j, i in enumerate(mapping):
        assert torch.equal(grown.layers[j].self_attn.q_proj.weight, src.layers[i].self_attn.q_proj.weight)
    assert run(grow_cfg(source, out, "add_layers=2"), progress=False)["skipped"]
    # pretraining continues from it (the same data, a deeper model)
    data = source.parent / "tokens"
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    cont = tmp_path / "cont"
    cfg = config.load(PretrainConfig, None, [f"data={data}", f"out_dir={cont}", f"model.vocab_size={vocab}",
                                             "train.steps=2", *TINY, *summary["continue_with"]])
    res = pretrain(cfg, progress=False)
    assert res["step"] == 2 and all(map(torch.isfinite, [torch.tensor(res["final_loss"])]))
    trained, _ = load_checkpoint(cont)
    assert trained.cfg.n_layers == 6
    assert not torch.equal(trained.layers[5].mlp.up_proj.weight, grown.layers[5].mlp.up_proj.weight)


def test_grow_records_which_block_and_why(source, tmp_path):
    """Yi chose the block by layer cosine similarity: grow.json (and DONE.json) say how the block
    was chosen, with its score, its rank among all candidates and the runner-up's score."""
    auto = run(grow_cfg(source, tmp_path / "auto", "add_layers=2"), progress=False)
    info = json.loads((tmp_path / "auto" / "grow.json").read_text())
    sims = [r["cosine"] for r in json.loads((tmp_path / "auto" / "similarity.json").read_text())["layers"]]
    scores = depth.block_scores(sims, 2)
    assert info["chosen_by"].startswith("similarity") and info["rank"] == 1 and info["candidates"] == 3
    assert info["best_block"] == info["block"] == auto["block"]
    assert info["best_mean_cosine"] == pytest.approx(max(scores))
    assert info["runner_up_mean_cosine"] == pytest.approx(sorted(scores)[-2])
    assert info["runner_up"] != info["block"] and auto["chosen_by"] == info["chosen_by"]
    sim_file = json.loads((tmp_path / "auto" / "similarity.json").read_text())    # what the run report reads
    assert sim_file["chosen_by"] == info["chosen_by"] and sim_file["runner_up"] == info["runner_up"]
    # a configured block is recorded as such, with where it ranks by similarity
    worst = min(range(3), key=lambda i: scores[i])
    given = run(grow_cfg(source, tmp_path / "given", f"block=[{worst}, {worst + 2}]"), progress=False)
    assert given["chosen_by"] == "config" and given["rank"] == 3 and given["best_block"] == info["block"]


def test_explicit_block_without_calibration(source, tmp_path):
    cfg = config.load(GrowConfig, None, [f"init.from_checkpoint={source}", f"out_dir={tmp_path / 'g'}",
                                         "block=[1, 4]"])
    summary = run(cfg, progress=False)
    assert summary["block"] == [1, 4] and summary["n_layers_after"] == 7 and summary["similarity"] is None
    assert json.loads((tmp_path / "g" / "grow.json").read_text())["mapping"] == [0, 1, 2, 3, 1, 2, 3]


@pytest.mark.parametrize("extra,key", [
    (["block=[2, 6]"], "block"),            # the model has 4 layers
    (["add_layers=5"], "add_layers"),
    (["data=/nonexistent"], "data"),
    (["init.from_checkpoint=/nonexistent"], "init.from_checkpoint"),
])
def test_bad_input_before_work(source, tmp_path, extra, key):
    out = tmp_path / "bad"
    with pytest.raises(ConfigError, match=rf"^{key}: ") as e:
        run(grow_cfg(source, out, *extra), progress=False)
    assert "\n" not in str(e.value) and not out.exists()


@pytest.mark.parametrize("extra,key", [(["block=[3, 1]"], "block"), (["block=[1, 2]", "add_layers=3"], "add_layers"),
                                       (["calib_tokens=0"], "calib_tokens")])
def test_bad_config_refused_at_load(tmp_path, extra, key):
    with pytest.raises(ConfigError, match=rf"\b{key}: "):
        config.load(GrowConfig, None, ["init.from_checkpoint=x", "data=y", *extra])
    with pytest.raises(ConfigError, match="data"):
        config.load(GrowConfig, None, ["init.from_checkpoint=x"])   # automatic block needs calibration data


def test_cli_registers_grow():
    from lmforge.cli import build_parser
    parser = build_parser(["grow"])
    assert callable(parser.parse_args(["grow", "--set", "block=[1,2]"]).func)
