import json

import numpy as np
import torch

from lmforge.shards import TokenDataset, write_dataset
from lmforge.train.loader import ShuffledDocs, domain_loaders, train_loader


def test_packing_covers_the_stream_with_resets(token_data):
    ds = TokenDataset(token_data)
    loader = train_loader(ds, seq_len=32, batch_size=4, seed=3)
    perm = ShuffledDocs(np.arange(ds.n_docs), 3)
    stream = np.concatenate([ds.doc(perm.next_doc()) for _ in range(ds.n_docs)])
    rows = []
    for _ in range(5):
        b = loader.next_batch()
        assert b["input_ids"].shape == (4, 32) and b["input_ids"].dtype == torch.int64
        for r in range(4):
            rows.append({k: v[r].numpy() for k, v in b.items()})
    flat = np.concatenate([r["input_ids"] for r in rows])
    assert np.array_equal(flat, stream[:len(flat)])  # documents in order, none lost or repeated
    for r in rows:
        ids, pos, lab, tok = r["doc_ids"], r["position_ids"], r["labels"], r["input_ids"]
        for t in range(32):
            starts_doc = t == 0 or ids[t] != ids[t - 1]
            assert pos[t] == (0 if starts_doc else pos[t - 1] + 1)
        for t in range(31):
            assert lab[t] == (tok[t + 1] if ids[t + 1] == ids[t] else -100)


def test_last_label_is_next_token_of_same_doc(tmp_path):
    write_dataset(tmp_path, [list(range(10, 60))], 128)  # one long doc split over rows
    loader = train_loader(TokenDataset(tmp_path), seq_len=16, batch_size=1, seed=0)
    b = loader.next_batch()
    assert b["labels"][0, -1].item() == b["input_ids"][0, -1].item() + 1
    assert (b["labels"][0, :-1] == b["input_ids"][0, 1:]).all()
    b2 = loader.next_batch()
    assert b2["position_ids"][0, 0].item() == 0  # a document piece starts its positions afresh


def test_deterministic_and_resumable(token_data):
    ds = TokenDataset(token_data)
    a = train_loader(ds, 24, 3, seed=7)
    for _ in range(30):  # crosses an epoch boundary
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # must survive JSON
    want = [a.next_batch() for _ in range(10)]
    b = train_loader(ds, 24, 3, seed=7)
    b.load_state_dict(state)
    got = [b.next_batch() for _ in range(10)]
    for x, y in zip(want, got):
        for k in x:
            assert torch.equal(x[k], y[k])
    c = train_loader(ds, 24, 3, seed=8)
    assert not torch.equal(c.next_batch()["input_ids"], train_loader(ds, 24, 3, seed=7).next_batch()["input_ids"])


def test_tokens_by_domain_counts(token_data):
    ds = TokenDataset(token_data)
    loader = train_loader(ds, 32, 2, seed=0)
    for _ in range(4):
        loader.next_batch()
    assert loader.tokens_by_domain.sum() == 4 * 2 * 32


def test_domain_loaders_are_finite_and_single_domain(token_data):
    val = TokenDataset(token_data, "val")
    loaders = domain_loaders(val, 16, 2)
    assert set(loaders) == {"prose", "code"}
    for name, loader in loaders.items():
        n = 0
        while (b := loader.next_batch()) is not None:
            n += int((b["doc_ids"] >= 0).sum())
        d = val.domain_names.index(name)
        assert n == sum(val.doc_len(i) for i in range(val.n_docs) if val.doc_domain[i] == d)
