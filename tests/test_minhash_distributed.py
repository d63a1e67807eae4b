"""MinHash as distributed stages (signatures per shard, LSH shuffle by band key, verified
pairs, star-round connected components): the same kept set and the same stats as the
single-process path (minhash.clusters) on real text with planted near-duplicates; the
compiled signature kernel equals the numpy one bit for bit."""
import json

import numpy as np
import pytest

from lmforge.config import load
from lmforge.data.config import DataConfig, MinhashConfig
from lmforge.data.dedup import components, minhash, minhash_step
from lmforge.data.dedup.partfiles import partition_of, write_partitioned
from lmforge.data.dedup.synthetic import near_duplicates, plant_near_duplicates, stdlib_documents
from lmforge.data.executor import LocalExecutor
from lmforge.data.pipeline import run_pipeline
from lmforge.io.writers import write_documents


@pytest.fixture(scope="module")
def corpus():
    """Stdlib code chunks + planted copies at 1, 2, 3 and 5% word edits, exact copies
    (one bucket larger than max_bucket) and empty-of-units documents."""
    texts = stdlib_documents(500)
    orig = np.full(len(texts), -1)
    for k, edit in enumerate((0.01, 0.02, 0.03, 0.05)):
        texts, o = plant_near_duplicates(texts, 25, edit, seed=k)
        orig = np.r_[orig, o[len(orig):]]
    texts += [texts[7]] * 12 + ["... --- !!!", ""]
    return texts, np.r_[orig, [7] * 12, -1, -1]


def _run(tmp_path, texts, name, **minhash_cfg):
    raw = tmp_path / f"raw-{name}"
    raw.mkdir()
    write_documents(raw / "a.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    cfg = load(DataConfig, data={"input": [str(raw)], "output": str(tmp_path / name),
                                 "steps": ["minhash"], "docs_per_shard": 97, "progress": False,
                                 "workers": minhash_cfg.pop("workers", 1), "minhash": minhash_cfg})
    run_pipeline(cfg, log=lambda *a: None)
    step = tmp_path / name / "01-minhash"
    stats = json.loads((step / "stats.json").read_text())
    rep = np.concatenate([np.load(p) for p in sorted((step / "work").glob("rep-*.npy"))])
    assert not (step / "work" / "lsh").exists()  # the shuffle files are cleaned up
    return rep, stats


@pytest.mark.parametrize("settings", [dict(threshold=0.7, partitions=3, max_bucket=5),
                                      dict(threshold=0.8, partitions=1, workers=2),
                                      dict(threshold=0.5, partitions=7, verify=False)])
def test_distributed_equals_single_process(tmp_path, corpus, settings):
    texts, orig = corpus
    rep, stats = _run(tmp_path, texts, "d", **dict(settings))
    cfg = MinhashConfig(**{k: v for k, v in settings.items() if k != "workers"})
    info: dict = {}
    ref = minhash.dedup_signatures(minhash.signatures_of_texts(texts, cfg), cfg, info)
    assert np.array_equal(rep, ref)
    removed = rep != np.arange(len(rep))
    assert removed[orig >= 0].sum() >= 25 and removed[-14:-2].all()  # not a vacuous match
    assert stats["removed"]["minhash_duplicate"]["docs"] == int(removed.sum())
    for k, v in info.items():
        assert stats[k] == v, k
    assert stats["duplicates"] == int(removed.sum())
    assert stats["clusters_with_duplicates"] == len(np.unique(ref[removed]))
    if settings.get("max_bucket") == 5:
        assert stats["capped_buckets"] > 0  # the capped-bucket pairing is exercised too


def test_default_partitions_and_synthetic_cjk(tmp_path):
    texts, orig = near_duplicates(600, dup_fraction=0.25, edit=0.02, seed=4)
    rep, stats = _run(tmp_path, texts, "s", threshold=0.7)
    cfg = MinhashConfig(threshold=0.7)
    assert np.array_equal(rep, minhash.dedup_signatures(minhash.signatures_of_texts(texts, cfg), cfg))
    assert stats["lsh_partitions"] == 1 and (rep != np.arange(len(rep)))[orig >= 0].mean() > 0.9


def _components_by_stars(tmp_path, n, src, dst, parts):
    u, v = np.r_[src, dst].astype(np.int64), np.r_[dst, src].astype(np.int64)
    edges = [tmp_path / f"e{p}.npy" for p in range(2)]
    half = len(u) // 2  # two "map tasks" wrote the links
    for k, sl in enumerate((slice(0, half), slice(half, None))):
        write_partitioned(edges[k], partition_of(u[sl], parts), parts, u=u[sl], v=v[sl],
                          sim=np.ones(len(u[sl]), np.float32))
    ex = LocalExecutor(1, progress=False)
    files = minhash_step._star_rounds(ex.map, edges, parts, tmp_path, "test")
    offsets = np.array([0, n // 3, n // 2, n], dtype=np.int64)  # three "shards" ...
    runs = [[0], [1, 2]]                                          # ... in two runs
    labels = [tmp_path / f"l{p}.npy" for p in range(parts)]
    for p in range(parts):
        components.labels_task(files, edges, p, offsets[[0, 1]], labels[p])
    for k, g in enumerate(runs):
        components.rep_task(labels, k, g, offsets, [tmp_path / f"r{i}.npy" for i in g])
    return np.concatenate([np.load(tmp_path / f"r{i}.npy") for i in range(3)])


@pytest.mark.parametrize("shape", ["random", "chain", "reversed_chain", "none"])
def test_star_rounds_equal_union_find(tmp_path, shape):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(5)
    n = 3000
    if shape == "random":
        src, dst = rng.integers(0, n, 2500), rng.integers(0, n, 2500)
    elif shape == "none":
        src = dst = np.zeros(0, np.int64)
    else:  # long paths: the worst case for label propagation
        perm = rng.permutation(n) if shape == "chain" else np.arange(n)[::-1]
        src, dst = perm[:-1], perm[1:]
    keep = src != dst
    src, dst = src[keep], dst[keep]
    rep = _components_by_stars(tmp_path, n, src, dst, parts=4)
    _, lab = connected_components(coo_matrix((np.ones(len(src)), (src, dst)), shape=(n, n)),
                                  directed=False)
    low = np.full(lab.max() + 1, n)
    np.minimum.at(low, lab, np.arange(n))
    assert np.array_equal(rep, low[lab])


def test_kernel_signatures_equal_numpy_path():
    import xxhash

    from lmforge.data.dedup import minhash_kernels as K

    rng = np.random.default_rng(1)
    for length in range(40):
        s = rng.integers(0, 256, length, dtype=np.uint8)
        assert K.xxh32(s, 0, length) == xxhash.xxh32_intdigest(s.tobytes())
    texts = stdlib_documents(150) + near_duplicates(40, seed=2)[0] + [
        "", "  ..  ", "İstanbul ﬁne café 中文字 한국어 日本語のテキスト x_y 123 ½ e\u0301", "a",
        "😀 emoji_word ok 𠀀𠀁", "Ⅻ ǅ ß Σ"]
    for cfg in (MinhashConfig(), MinhashConfig(ngram=1, lowercase=False, num_perm=7, seed=3),
                MinhashConfig(ngram=9, num_perm=64)):
        sh = minhash.Shingler(cfg.ngram, cfg.lowercase)
        ref = minhash.MinHasher(cfg.num_perm, cfg.seed).signatures([sh(t) for t in texts])
        assert np.array_equal(minhash.signatures_of_texts(texts, cfg), ref)
        # small batches (the kernel's buffer bound) give the same rows
        assert np.array_equal(minhash.signatures_of_texts(texts, cfg, batch_bytes=500), ref)
