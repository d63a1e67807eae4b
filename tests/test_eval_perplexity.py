"""Per-domain perplexity and bits per byte against a direct float64 computation."""
import copy
import math

import numpy as np
import pytest
import torch

from lmforge import config
from lmforge.eval.perplexity import (bpb_from_loss, bytes_per_token, perplexity, score_documents,
                                     val_bpb_metrics, windows)
from lmforge.model import ModelConfig, Transformer
from lmforge.shards import TokenDataset
from lmforge.tokenizer.train import load_tokenizer
from test_eval_helpers import TEXTS, make_text_dataset, make_tokenizer


def tiny_model(vocab, seed=0):
    cfg = config.from_dict(ModelConfig, {"vocab_size": vocab, "d_model": 32, "n_layers": 2, "n_heads": 4,
                                         "n_kv_heads": 2, "max_seq_len": 128})
    torch.manual_seed(seed)
    return Transformer(cfg).eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ppl")
    tok_dir = make_tokenizer(tmp / "tok")
    val = {"prose": [TEXTS[0], TEXTS[4], "Short."], "code": [TEXTS[1], TEXTS[5]], "zh": [TEXTS[3]]}
    data = make_text_dataset(tmp / "tokens", tok_dir, {"prose": TEXTS[:2]}, val=val)
    ds = TokenDataset(data, "val")
    return ds, load_tokenizer(tok_dir), tiny_model(ds.vocab_size), data


def reference(model, ds, tok):
    """Each whole document in one float64 forward pass (no windows, no packing)."""
    m64 = copy.deepcopy(model).double()
    out = {}
    for d, name in enumerate(ds.domain_names):
        nats, toks, nbytes = 0.0, 0, 0
        for i in np.flatnonzero(ds.doc_domain == d):
            doc = torch.tensor(np.asarray(ds.doc(i), dtype=np.int64))[None]
            with torch.no_grad():
                logp = torch.log_softmax(m64(doc[:, :-1]).double(), -1)
            nats -= float(logp[0].gather(-1, doc[0, 1:, None]).sum())
            toks += doc.shape[1] - 1
            text = tok.decode(doc[0].tolist(), skip_special_tokens=True)
            nbytes += len(text.encode("utf-8"))
        out[name] = (nats, toks, nbytes)
    return out


def test_perplexity_and_bpb_match_float64(setup):
    ds, tok, model, _ = setup
    ref = reference(model, ds, tok)
    res = perplexity(model, ds, tok, seq_len=128, batch_size=2)
    assert set(res) == {"prose", "code", "zh", "all"}
    for name, (nats, toks, nbytes) in ref.items():
        r = res[name]
        assert r["tokens"] == toks and r["bytes"] == nbytes
        assert r["nats"] == pytest.approx(nats, rel=1e-5)
        assert r["ppl"] == pytest.approx(math.exp(nats / toks), rel=1e-5)
        assert r["bpb"] == pytest.approx(nats / math.log(2) / nbytes, rel=1e-5)
    tot = [sum(v[k] for v in ref.values()) for k in range(3)]
    assert res["all"]["bpb"] == pytest.approx(tot[0] / math.log(2) / tot[2], rel=1e-5)
    # the Chinese line: 3 bytes per character, so bytes > characters
    assert res["zh"]["bytes"] == len(TEXTS[3].encode()) > len(TEXTS[3])


def test_windows_cover_every_token_once(setup):
    ds, tok, model, _ = setup
    doc = list(range(3, 30))
    wins = windows(doc, 8)
    assert [len(x) for x, _ in wins] == [8, 8, 8, 2]
    assert np.concatenate([y for _, y in wins]).tolist() == doc[1:]
    # packed short windows == each window scored alone in float64
    docs = [np.asarray(ds.doc(i)) for i in range(ds.n_docs)]
    got = score_documents(model, docs, seq_len=8, batch_size=3)
    m64 = copy.deepcopy(model).double()
    for d, (nats, n) in zip(docs, got):
        want = 0.0
        for x, y in windows(d, 8):
            with torch.no_grad():
                lp = torch.log_softmax(m64(torch.tensor(x)[None]).double(), -1)[0]
            want -= float(lp.gather(-1, torch.tensor(y)[:, None]).sum())
        assert n == len(d) - 1
        assert nats == pytest.approx(want, rel=1e-5)


def test_bpb_helpers(setup):
    ds, tok, model, data = setup
    res = perplexity(model, ds, tok, seq_len=128)
    bpt = bytes_per_token(ds, tok)
    for d in ("prose", "code"):
        # the trainer's val/<domain> loss (nats/token) converts to the same bits per byte
        assert bpb_from_loss(res[d]["loss"], res[d]["tokens"], res[d]["bytes"]) == pytest.approx(res[d]["bpb"])
        assert res[d]["loss"] / bpt[d] / math.log(2) == pytest.approx(res[d]["bpb"])
    model.train()
    m = val_bpb_metrics(model, str(data), tok, seq_len=64)
    assert model.training  # restored
    model.eval()
    assert set(m) == {"bpb/prose", "bpb/code", "bpb/zh", "bpb/all"}
    assert perplexity(model, ds, None, seq_len=64)["prose"]["bpb"] is None  # no tokenizer: no bytes
