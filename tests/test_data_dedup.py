"""MinHash LSH against planted near-duplicates; exact-substring dedup against brute force."""
import subprocess
import sys

import numpy as np
import pytest

from lmforge.data.config import MinhashConfig
from lmforge.data.dedup import minhash, substring
from lmforge.data.dedup.evaluate import datasketch_keep, planted_quality, true_jaccard
from lmforge.data.dedup.synthetic import (near_duplicates, plant_near_duplicates, repeated_spans,
                                          stdlib_documents)


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


@pytest.fixture(scope="module")
def stdlib_docs():
    return stdlib_documents(1500)


def test_minhash_recall_at_least_datasketch_on_real_text(stdlib_docs):
    """Real, mostly unique text (stdlib code) with planted copies at 2% word edits (true
    Jaccard 0.61-0.81, around the default threshold 0.7): all-pairs candidates with
    verification find at least what datasketch finds, at the same settings."""
    texts, orig = plant_near_duplicates(stdlib_docs, 250, 0.02, seed=3)
    cfg = MinhashConfig()
    info = {}
    keep = minhash.dedup_texts(texts, cfg, info=info)
    ours = planted_quality(keep, orig)
    ref = planted_quality(datasketch_keep(texts, cfg), orig)
    assert ours[0] >= ref[0] and ours[1] >= 0.97, (ours, ref)
    above = np.flatnonzero(true_jaccard(texts, orig) >= 0.75)  # well above the threshold
    assert (~keep[above]).mean() > 0.95
    hist = info["similarity_histogram"]
    assert sum(hist["removed_docs"]) == (~keep).sum()
    assert sum(hist["removed_docs"][:14]) == 0  # nothing linked below 0.7


def test_minhash_links_all_pairs_in_a_bucket():
    """Doc 0 shares a band with 1 and 2 but is unlike them; 1 and 2 are alike. Linking each
    document to its bucket's first member would never compare 1 with 2."""
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 1 << 32, size=(3, 64), dtype=np.uint64).astype(np.uint32)
    sigs[:, :4] = sigs[0, :4]  # one band of 4 rows shared by all three
    sigs[2, 4:58] = sigs[1, 4:58]  # 1 and 2 agree on 58 of 64 entries
    rep = minhash.clusters(sigs, bands=1, rows=4, threshold=0.8)
    assert rep.tolist() == [0, 1, 1]


def test_minhash_bucket_cap_still_links_and_is_reported():
    sigs = np.tile(np.arange(32, dtype=np.uint32), (300, 1))  # 300 identical documents
    info = {}
    rep = minhash.clusters(sigs, bands=4, rows=8, threshold=0.7, max_bucket=10, info=info)
    assert (rep == 0).all()
    assert info["capped_buckets"] == 4 and info["largest_bucket"] == 300
    assert info["candidate_pairs"] == sum(300 - d for d in range(1, 10))  # next 9 members only


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


LAYOUT = set(b" \t\n\r\x0b\x0c!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def brute_substring(texts, k, keep_layout=False):
    """Reference: bytes in a k-window seen earlier are removed, then whole chars only;
    with keep_layout, removed runs of only ASCII whitespace/punctuation are put back."""
    seen, out = set(), []
    for t in texts:
        d = t.encode("utf-8")
        rm = np.zeros(len(d), bool)
        for i in range(len(d) - k + 1):
            w = d[i:i + k]
            if w in seen:
                rm[i:i + k] = True
            seen.add(w)
        chars, i = [], 0  # (bytes, removed) per character
        while i < len(d):
            j = i + 1
            while j < len(d) and (d[j] & 0xC0) == 0x80:
                j += 1
            chars.append((d[i:j], bool(rm[i:j].all())))
            i = j
        res, run = bytearray(), bytearray()
        for c, gone in chars + [(b"", False)]:
            if gone:
                run += c
                continue
            if run and keep_layout and all(b in LAYOUT for b in run):
                res += run  # a layout-only run stays
            run = bytearray()
            res += c
        out.append(res.decode("utf-8"))  # raises if a character was split
    return out


@pytest.mark.parametrize("method", ["hash", "suffix_array"])
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [6, 20, 60])
def test_substring_equals_brute_force(seed, k, method):
    texts = repeated_spans(30, seed=seed)
    want = brute_substring(texts, k)
    assert substring.dedup_texts(texts, k, keep_layout=False, method=method) == want
    assert substring.dedup_texts(texts, k, part_bytes=3000, keep_layout=False,
                                 method=method) == want  # pairs of parts


def layout_corpus(n_docs, seed):
    """Words mixed with long runs of spaces, rules and table borders; planted repeats."""
    rng = np.random.default_rng(seed)
    pieces = ["ab", "ba", "中文", "é", "|", "+", "\n", "  ", " | ", "+--+"]

    def text(n):
        out = []
        for _ in range(n):
            r = rng.random()
            if r < 0.15:  # a layout run of random length
                out.append(str(rng.choice([" ", "-", "=", "."])) * int(rng.integers(3, 60)))
            else:
                out.append(str(rng.choice(pieces)))
        return "".join(out)
    docs = [text(int(rng.integers(20, 120))) for _ in range(n_docs)]
    spans = [text(int(rng.integers(5, 40))) for _ in range(8)]
    for _ in range(n_docs):
        d = int(rng.integers(n_docs))
        pos = int(rng.integers(len(docs[d]) + 1))
        docs[d] = docs[d][:pos] + spans[int(rng.integers(len(spans)))] + docs[d][pos:]
    return docs


@pytest.mark.parametrize("seed", range(2))
def test_substring_keep_layout_equals_brute_force(seed):
    texts = layout_corpus(40, seed)
    for k in (8, 30):
        want = brute_substring(texts, k, keep_layout=True)
        assert want != brute_substring(texts, k)  # the option matters on this corpus
        assert substring.dedup_texts(texts, k) == want
        assert substring.dedup_texts(texts, k, part_bytes=2048) == want


def test_ascii_tables_survive():
    border = "+" + "-" * 30 + "+" + "-" * 40 + "+\n"
    def table(rows):
        return border + "".join(f"| {a:<28} | {b:<38} |\n" for a, b in rows) + border
    a = "Results of the first run.\n" + table([("alpha", "1"), ("beta", "2")])
    b = "A different table.\n" + table([("gamma", "3"), ("delta", "4")])
    out = substring.dedup_texts([a, b], 50)
    assert out == [a, b]  # borders and padding repeat (>= 50 bytes) but stay
    off = substring.dedup_texts([a, b], 50, keep_layout=False)
    assert border not in off[1] and off == brute_substring([a, b], 50)
    again = substring.dedup_texts([a, a.replace("first", "second")], 50)
    assert again[1] == "Results of the second"  # the repeated table itself still goes


def test_substring_repeat_within_one_document_and_cjk():
    span = "月份下拉菜单一月二月三月四月五月六月七月八月九月十月十一月十二月"  # 3-byte chars
    texts = ["前言" + span + "中间" + span + "结尾", "另一篇" + span + "完"]
    out = substring.dedup_texts(texts, 30)
    assert out[0] == "前言" + span + "中间" + "结尾"
    assert out[1] == "另一篇完"
    assert out == brute_substring(texts, 30)


def test_cjk_cut_at_character_boundaries():
    """Windows start and end inside 3- and 4-byte characters; only whole ones go."""
    rng = np.random.default_rng(7)
    chars = list("中文字的一是了我不人在有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会") + ["😀", "é"]
    base = ["".join(rng.choice(chars, size=120)) for _ in range(6)]
    texts = base + [b[17:90] + "x" + b[3:50] for b in base]
    for k in (7, 10, 25, 40):
        want = brute_substring(texts, k)
        assert substring.dedup_texts(texts, k) == want
        assert substring.dedup_texts(texts, k, part_bytes=1500) == want


def test_substring_work_arrays_are_small():
    """The suffix array and every per-byte work array are int32 or one byte wide."""
    from pydivsufsort import divsufsort

    from lmforge.data.dedup import substring_kernels as kern

    texts = repeated_spans(20, seed=1)
    buf, offsets = substring._join([t.encode() for t in texts])
    sa = divsufsort(buf)
    linked = kern.shares_prefix_with_pred(np.frombuffer(buf, np.uint8), sa, 20)
    assert sa.dtype == np.int32 and linked.dtype == np.bool_
    assert kern.later_in_group(sa, linked).dtype == np.bool_
    with pytest.raises(ValueError, match="part_bytes"):
        substring.check_sa_size(1 << 31)


def test_auto_part_bytes():
    gib = 1 << 30
    assert substring.auto_part_bytes(10 * gib, available=24 * gib) == int(24 * gib * 0.7) // 12 // 2
    assert substring.auto_part_bytes(100 << 20, available=24 * gib) >= 100 << 20  # one part
    assert substring.auto_part_bytes(100 * gib, available=1 << 40) <= (1 << 30)  # int32 pairs


_PEAK = """
import sys
from lmforge.data.dedup import substring
from lmforge.data.dedup.synthetic import stdlib_documents
data = [t.encode() for t in stdlib_documents(100000, lines=200)][:{n}]
sizes = [len(d) for d in data]
substring.removal_spans(lambda lo, hi: data[lo:hi], sizes[:20], 100, 1 << 30, method={m!r})
rss = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) * 1024
substring.removal_spans(lambda lo, hi: data[lo:hi], sizes, 100, 1 << 30, method={m!r})
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
print((peak - rss) / sum(sizes), sum(sizes))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("method", ["hash", "suffix_array"])
def test_substring_peak_memory_per_byte(method):
    """Peak RSS above the loaded texts stays under 12 bytes per corpus byte (it was 28).
    VmHWM, not ru_maxrss: after fork + exec, ru_maxrss starts at the parent's RSS."""
    out = subprocess.run([sys.executable, "-c", _PEAK.format(n=100000, m=method)],
                         capture_output=True, text=True, check=True).stdout.split()
    per_byte, n = float(out[0]), int(out[1])
    assert n > 4_000_000  # large enough that allocator noise is well under 1 B per byte
    assert per_byte <= 12, per_byte
