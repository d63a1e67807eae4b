"""MinHash LSH against planted near-duplicates; exact-substring dedup against brute force."""
import numpy as np
import pytest

from lmforge.data.config import MinhashConfig
from lmforge.data.dedup import minhash, substring
from lmforge.data.dedup.synthetic import near_duplicates, repeated_spans


def test_optimal_param_matches_datasketch():
    from datasketch.lsh import _optimal_param

    for t, n in [(0.8, 128), (0.5, 64), (0.9, 256)]:
        assert minhash.optimal_param(t, n) == _optimal_param(t, n, 0.5, 0.5)


def test_signature_estimates_jaccard():
    """The fraction of equal signature entries estimates the true shingle Jaccard."""
    cfg = MinhashConfig(num_perm=256)
    texts, orig = near_duplicates(60, dup_fraction=0.5, edit=0.05, seed=3)
    sh = minhash.Shingler(cfg.ngram)
    sigs = minhash.signatures_of_texts(texts, cfg)
    for i in np.flatnonzero(orig >= 0)[:10]:
        a, b = set(sh(texts[i]).tolist()), set(sh(texts[orig[i]]).tolist())
        true = len(a & b) / len(a | b)
        est = (sigs[i] == sigs[orig[i]]).mean()
        assert abs(est - true) < 0.12, (true, est)


def test_minhash_recall_precision_and_survivor():
    texts, orig = near_duplicates(1200, dup_fraction=0.2, edit=0.01, seed=0)
    keep = minhash.dedup_texts(texts, MinhashConfig(threshold=0.8))
    removed, planted = ~keep, orig >= 0
    recall = (removed & planted).sum() / planted.sum()
    precision = (removed & planted).sum() / max(removed.sum(), 1)
    assert recall > 0.9 and precision > 0.98, (recall, precision)
    assert keep[: (orig < 0).sum()].mean() > 0.98  # originals (lower index) survive


def test_minhash_cjk_char_shingles():
    a = "今天天气很好我们去公园散步吧这是一个关于历史和科学的文章内容丰富值得一读" * 3
    b = a.replace("散步", "跑步")
    c = "完全不同的内容讲述了一个遥远的故事山川河流与城市的变迁以及人们的生活" * 3
    keep = minhash.dedup_texts([a, b, c], MinhashConfig(threshold=0.7))
    assert keep.tolist() == [True, False, True]


def test_minhash_deterministic_by_seed_and_parallel():
    texts, _ = near_duplicates(600, seed=5)
    cfg = MinhashConfig()
    s1 = minhash.parallel_signatures(texts, cfg, workers=1)
    s2 = minhash.parallel_signatures(texts, cfg, workers=2, chunk=100)
    assert np.array_equal(s1, s2)
    assert np.array_equal(minhash.dedup_texts(texts, cfg), minhash.dedup_texts(texts, cfg))
    s3 = minhash.signatures_of_texts(texts[:5], MinhashConfig(seed=2))
    assert not np.array_equal(s1[:5], s3)


def test_permutation_is_exact_mod_mersenne():
    mh = minhash.MinHasher(16, seed=0)
    x = np.array([0, 1, 2 ** 32 - 1, 123456789], dtype=np.uint64)
    got = mh._permute(x)
    p = (1 << 61) - 1
    want = [[((int(a) * int(v) + int(b)) % p) & 0xFFFFFFFF for v in x]
            for a, b in zip(mh.a[:, 0], mh.b[:, 0])]
    assert got.tolist() == want


def brute_substring(texts, k):
    """Reference: bytes in a k-window seen earlier are removed, then whole chars only."""
    seen, out = set(), []
    for t in texts:
        d = t.encode("utf-8")
        rm = np.zeros(len(d), bool)
        for i in range(len(d) - k + 1):
            w = d[i:i + k]
            if w in seen:
                rm[i:i + k] = True
            seen.add(w)
        res, i = bytearray(), 0
        while i < len(d):
            j = i + 1
            while j < len(d) and (d[j] & 0xC0) == 0x80:
                j += 1
            if not rm[i:j].all():
                res += d[i:j]
            i = j
        out.append(res.decode("utf-8"))  # raises if a character was split
    return out


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [6, 20, 60])
def test_substring_equals_brute_force(seed, k):
    texts = repeated_spans(30, seed=seed)
    want = brute_substring(texts, k)
    assert substring.dedup_texts(texts, k) == want
    assert substring.dedup_texts(texts, k, part_bytes=3000) == want  # pairwise parts


def test_substring_repeat_within_one_document_and_cjk():
    span = "月份下拉菜单一月二月三月四月五月六月七月八月九月十月十一月十二月"  # 3-byte chars
    texts = ["前言" + span + "中间" + span + "结尾", "另一篇" + span + "完"]
    out = substring.dedup_texts(texts, 30)
    assert out[0] == "前言" + span + "中间" + "结尾"
    assert out[1] == "另一篇完"
    assert out == brute_substring(texts, 30)


def test_whole_chars_never_split():
    # "中" = e4 b8 ad; a mask covering only its last two bytes must not remove anything
    buf = "a中b".encode()
    mask = np.array([0, 0, 1, 1, 0], bool)
    assert substring.whole_chars(buf, mask).tolist() == [False] * 5
    mask = np.array([0, 1, 1, 1, 0], bool)
    assert substring.whole_chars(buf, mask).tolist() == [False, True, True, True, False]
