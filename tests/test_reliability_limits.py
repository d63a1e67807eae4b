"""Reliability limits (issue 33): alias bombs refused, truncated checkpoints are corrupt (not
unfinished saves), one oversized record costs bounded memory, zstd damage costs only the
damaged frames, compressed conversation files, strict JSON out, and every input-caused failure
an exit 2 or 5 naming the file (a fuzz over the cases the soak found)."""
import json
import time
from pathlib import Path

import pytest

from lmforge import config
from lmforge.cli import main
from lmforge.config import ConfigError
from test_reliability_runs import BASE, cli_args, cfg_for, curve, run_cli, train_records
from lmforge.stages.pretrain import run as pretrain


def run_quiet(capsys, argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------ YAML


def bomb(depth: int, indent: str = "") -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, depth + 1)]
    return "".join(indent + line + "\n" for line in lines)


def test_alias_bomb_in_a_recipe_is_refused_at_once_in_one_line(tmp_path, capsys):
    # under a stage's config: the recipe's ${...} expansion walks it before any key is checked
    # (main: 83 s at this depth, minutes and gigabytes deeper)
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text("name: bomb\nstages:\n  - name: corpus\n    config:\n      junk:\n" + bomb(7, " " * 8))
    t0 = time.process_time()
    code, _, err = run_quiet(capsys, ["run", str(recipe), "--check"])
    assert time.process_time() - t0 < 5          # not a speed claim: the difference between a hang and none
    assert code == 2 and err.count("\n") == 1 and "bomb.yaml" in err and "aliases" in err


def test_alias_bomb_in_a_stage_config_and_in_set_is_refused(tmp_path):
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(bomb(8))
    with pytest.raises(ConfigError, match="sft.yaml.*aliases"):
        config.read_yaml(cfg)
    # a few aliases are fine: the expanded tree is small
    small = tmp_path / "ok.yaml"
    small.write_text("base: &b {lr: 1.0e-3, steps: 10}\none: *b\ntwo: *b\n")
    assert config.read_yaml(small)["two"] == {"lr": 1.0e-3, "steps": 10}


def test_python_tag_in_set_and_non_utf8_config_are_config_errors(tmp_path, capsys):
    code, _, err = run_quiet(capsys, ["pretrain", "--set", "data=!!python/object/apply:os.system ['true']"])
    assert code == 2 and err.count("\n") == 1 and "--set" in err
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("system_prompt: caf\xe9\n".encode("latin-1"))
    code, _, err = run_quiet(capsys, ["pretrain", str(bad)])
    assert code == 2 and err.count("\n") == 1 and "latin1.yaml" in err and "UTF-8" in err


def test_integer_from_an_absurd_float_is_refused():
    with pytest.raises(ConfigError, match="steps"):
        config.load(__import__("lmforge.train.trainer", fromlist=["TrainConfig"]).TrainConfig, None,
                    ["steps=1.0e+30"])


# ------------------------------------------------------------------ truncated checkpoints


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def test_truncated_latest_checkpoint_falls_back_with_the_corrupt_warning(token_data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, cli_args(token_data, out, "train.steps=6"))
    assert code == 0
    before = train_records(out)
    (out / "DONE.json").unlink()
    truncate(out / "checkpoints" / "step-6" / "optimizer.pt")
    code, stdout, err = run_cli(capsys, cli_args(token_data, out, "train.steps=6"))
    assert code == 0, err
    said = stdout + err
    assert "step-6/optimizer.pt" in said and "truncated" in said and "falling back" in said and "step-4" in said
    assert curve(train_records(out)) == curve(before)


def test_every_checkpoint_truncated_is_exit_5_not_a_silent_restart(token_data, tmp_path, capsys):
    out = tmp_path / "run"
    pretrain(cfg_for(token_data, out, "train.steps=4"), progress=False)
    (out / "DONE.json").unlink()
    for p in (out / "checkpoints").glob("step-*/optimizer.pt"):
        truncate(p)
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=4"))
    assert code == 5 and err.count("\n") == 1 and "optimizer.pt" in err and "truncated" in err
    assert (out / "checkpoints" / "step-2").is_dir()     # nothing deleted: the user decides


def test_init_from_a_run_with_truncated_checkpoints_warns_then_exit_5(token_data, tmp_path, capsys):
    src = tmp_path / "src"
    pretrain(cfg_for(token_data, src, "train.steps=4"), progress=False)
    truncate(src / "checkpoints" / "step-4" / "optimizer.pt")
    code, stdout, err = run_cli(capsys, cli_args(token_data, tmp_path / "a", "train.steps=2",
                                                 f"init.from_checkpoint={src}"))
    assert code == 0, err
    assert "step-4/optimizer.pt" in stdout + err and "step-2" in stdout + err
    truncate(src / "checkpoints" / "step-2" / "model.safetensors")
    code, _, err = run_cli(capsys, cli_args(token_data, tmp_path / "b", "train.steps=2",
                                            f"init.from_checkpoint={src}"))
    assert code == 5 and err.count("\n") == 1 and "truncated" in err and "step-2/model.safetensors" in err


# ------------------------------------------------------------------ compressed input


def stdlib_docs(n: int) -> list[bytes]:
    """Real, mostly unique text: lines of CPython's standard library as documents."""
    import os
    root = Path(os.__file__).parent
    out = []
    for f in sorted(root.glob("*.py")):
        text = f.read_text(encoding="utf-8", errors="replace")
        for k, chunk in enumerate(text.split("\n\n")):
            if chunk.strip():
                out.append(json.dumps({"id": f"{f.name}:{k}", "text": chunk}).encode() + b"\n")
            if len(out) == n:
                return out
    return out


def read_docs(path):
    from lmforge.io.documents import ErrorSink
    from lmforge.io.readers import iter_documents
    errors = ErrorSink()
    docs = list(iter_documents([path], errors))
    return docs, errors


def damaged_before(data: bytes, at: int, lines: list[bytes]) -> int:
    """How many whole lines precede decoded offset `at`."""
    total, n = 0, 0
    for line in lines:
        total += len(line)
        if total > at:
            return n
        n += 1
    return n


def test_zstd_damage_costs_only_the_damaged_part(tmp_path):
    import zstandard
    lines = stdlib_docs(6000)
    raw = b"".join(lines)
    comp = bytearray(zstandard.ZstdCompressor(level=3).compress(raw))    # one frame, as `zstd` writes
    at = int(len(comp) * 0.9)
    for k in range(64):
        comp[at + k] ^= 0xFF
    path = tmp_path / "one_frame.jsonl.zst"
    path.write_bytes(bytes(comp))
    docs, errors = read_docs(path)
    # the decoder fails inside the damaged block; every line before that block's start survives
    # (today a 1 MB decoded chunk was lost with it). Bound: lines before the damage minus 2 blocks.
    dctx = zstandard.ZstdDecompressor().decompressobj()
    good = b""
    try:
        for i in range(0, at, 1024):
            good += dctx.decompress(bytes(comp[i:min(i + 1024, at)]))
    except zstandard.ZstdError:
        pass
    before = damaged_before(raw, len(good), lines)
    assert len(docs) >= before - damaged_before(raw, 256 * 1024, lines) and len(docs) >= 0.85 * len(lines)
    assert [d["id"] for d in docs] == [json.loads(l)["id"] for l in lines[:len(docs)]]   # no garbage kept
    assert errors.counts.get("unreadable") == 1, errors.counts

    # several frames (our shard writer's and `zstd --rsyncable`-like files): the frames after the
    # damaged one are read too
    frames = [zstandard.ZstdCompressor(level=3).compress(b"".join(lines[i:i + 500])) for i in range(0, 6000, 500)]
    hit = bytearray(frames[5])
    for k in range(64):
        hit[len(hit) // 2 + k] ^= 0xFF
    frames[5] = bytes(hit)
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(frames))
    docs, errors = read_docs(path)
    ids = {d["id"] for d in docs}
    assert all(json.loads(l)["id"] in ids for l in lines[:2500] + lines[3000:])   # frame 5 only is hit
    assert len(docs) < 6000 and errors.counts.get("unreadable") == 1, errors.counts


def test_zstd_cut_mid_stream_is_unreadable_like_gzip(tmp_path):
    import gzip

    import zstandard
    lines = stdlib_docs(3000)
    raw = b"".join(lines)
    for name, data in (("cut.jsonl.zst", zstandard.ZstdCompressor(level=3).compress(raw)),
                       ("cut.jsonl.gz", gzip.compress(raw))):
        path = tmp_path / name
        path.write_bytes(data[:int(len(data) * 0.6)])
        docs, errors = read_docs(path)
        assert errors.counts.get("unreadable") == 1 and "malformed_json" not in errors.counts, (name, errors.counts)
        assert len(docs) > 1000 and [d["id"] for d in docs] == [json.loads(l)["id"] for l in lines[:len(docs)]]


# ------------------------------------------------------------------ bounded memory per record


CHILD = r"""
import json, resource, sys
from lmforge.align.preference_data import load_pairs
from lmforge.align.sft_data import load_conversations
from lmforge.io.documents import ErrorSink
from lmforge.tokenizer.train import load_tokenizer
tok = load_tokenizer(sys.argv[1])
tok.encode("warm up the tokenizer once, so both runs start alike")
vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))   # a hard wall, not a hang
load = load_conversations if sys.argv[2] == "sft" else load_pairs
errors = ErrorSink()
if sys.argv[2] == "sft":
    _, stats = load_conversations([sys.argv[3]], tok, 256, 8, errors)
else:
    _, stats = load_pairs([sys.argv[3]], tok, 256, errors)
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "stats": stats,
                  "rejects": [(r.get("line"), r.get("reason")) for r in getattr(errors, "records", [])]}))
"""


def child_run(tok_dir, kind, path) -> dict:
    import os
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tok_dir), kind, str(path)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    from test_align_utils import make_tokenizer
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def big_text(nbytes: int) -> str:
    import os
    text = (Path(os.__file__).parent / "argparse.py").read_text(encoding="utf-8")
    return (text * (nbytes // len(text) + 1))[:nbytes]


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_one_huge_record_costs_bounded_memory(chat_tok, tmp_path, kind):
    import random

    from test_align_utils import conversation
    rng = random.Random(0)
    if kind == "sft":
        good = [json.dumps(conversation(rng, 2)) for _ in range(200)]
        def record(text):
            return json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]})
    else:
        good = [json.dumps({"prompt": f"Which color is item {i}?", "chosen": "Blue, as always.",
                            "rejected": f"I cannot say {i}."}) for i in range(200)]
        def record(text):
            return json.dumps({"prompt": "Summarise this.", "chosen": text, "rejected": "No."})
    normal = tmp_path / "normal.jsonl"
    normal.write_text("\n".join(good) + "\n")
    hostile = tmp_path / "hostile.jsonl"
    # line 101: 50 MB (over the 16 MiB cap: never read whole); line 152: 6 MB (under the cap: far
    # over seq_len in characters, so never tokenized)
    hostile.write_text("\n".join(good[:100] + [record(big_text(50 << 20))] + good[100:150]
                                 + [record(big_text(6 << 20))] + good[150:]) + "\n")
    base = child_run(chat_tok, kind, normal)
    hurt = child_run(chat_tok, kind, hostile)
    assert hurt["stats"]["kept"] == base["stats"]["kept"] > 0
    assert hurt["stats"]["too_long"] == base["stats"]["too_long"] + 2
    assert [101, "too_long"] in hurt["rejects"]             # the line is named in rejects.jsonl
    assert hurt["rss_mb"] - base["rss_mb"] < 300, (base["rss_mb"], hurt["rss_mb"])


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_sft_and_dpo_read_compressed_files(chat_tok, tmp_path, suffix):
    import gzip
    import random

    import zstandard

    from lmforge.align.preference_data import load_pairs
    from lmforge.align.sft_data import load_conversations
    from lmforge.io.documents import ErrorSink
    from lmforge.tokenizer.train import load_tokenizer
    from test_align_utils import conversation
    rng = random.Random(1)
    tok = load_tokenizer(chat_tok)
    pack = gzip.compress if suffix.endswith("gz") else zstandard.ZstdCompressor(level=3).compress
    convs = [json.dumps(conversation(rng, rng.randint(1, 3))) for _ in range(40)]
    sft = tmp_path / f"sft{suffix}"
    sft.write_bytes(pack(("\n".join(convs) + "\n").encode()))
    kept, stats = load_conversations([str(sft)], tok, 256, 8, ErrorSink())
    assert stats["kept"] == 40 and stats["invalid_utf8"] == 0, stats
    pairs = [json.dumps({"prompt": f"Name colour {i}.", "chosen": "Red.", "rejected": f"Not {i}."}) for i in range(30)]
    dpo = tmp_path / f"dpo{suffix}"
    dpo.write_bytes(pack(("\n".join(pairs) + "\n").encode()))
    got, stats = load_pairs([str(dpo)], tok, 256, ErrorSink())
    assert stats["kept"] == 30 and stats["invalid_utf8"] == 0, stats


# ------------------------------------------------------------------ strict JSON out


def strict(line: str):
    def refuse(c):
        raise ValueError(c)
    return json.loads(line, parse_constant=refuse)


def test_data_shards_are_strict_json_and_non_finite_numbers_counted(tmp_path, capsys):
    import zstandard

    from lmforge.io.writers import DocWriter
    raw = tmp_path / "raw"
    raw.mkdir()
    good = [json.loads(l) for l in stdlib_docs(20)]
    lines = [json.dumps(d) for d in good]
    lines.insert(3, '{"text": "a score past the range of a double", "score": 1.1e99999}')
    lines.insert(7, '{"text": "a NaN literal", "meta": {"q": NaN}}')
    (raw / "a.jsonl").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "data.yaml"
    cfg.write_text(json.dumps({"input": [str(raw)], "output": str(tmp_path / "out"), "workers": 1,
                               "progress": False, "steps": []}))
    code, out, err = run_quiet(capsys, ["data", str(cfg)])
    assert code == 0, err
    assert "non_finite_number 2" in out
    shards = sorted((tmp_path / "out" / "final").rglob("*.jsonl.zst"))   # the kept shards (final/ links them)
    text = b"".join(zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes())
                    for p in shards).decode()
    kept = [strict(l) for l in text.splitlines()]
    assert len(kept) == 20 and "Infinity" not in text and "NaN" not in text
    # the writer itself never writes a non-JSON number, whatever a step put into meta
    path = tmp_path / "w.jsonl"
    with DocWriter(path) as w:
        w.write({"id": "x", "text": "t", "meta": {"score": float("inf"), "q": float("nan")}})
    assert strict(path.read_text())["meta"] == {"score": "inf", "q": "nan"}


# ------------------------------------------------------------------ input-caused failures: exit 2 or 5


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    from test_align_utils import make_source
    root = tmp_path_factory.mktemp("hf")
    run, _ = make_source(root / "src")
    assert main(["export", str(run), str(root / "hf")]) == 0
    return run, root / "hf"


def _safetensors_variants(st: bytes) -> dict:
    import struct
    n = struct.unpack("<Q", st[:8])[0]
    header = json.loads(st[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    beyond = {**header, name: {**header[name], "data_offsets": [0, len(st) * 4]}}
    beyond = json.dumps(beyond).encode()
    dtype = json.dumps({**header, name: {**header[name], "dtype": "Q7"}}).encode()
    return {"cut in half": st[:len(st) // 2], "cut in the header": st[:20], "empty": b"",
            "garbage": bytes((i * 7919) % 251 for i in range(len(st))),
            "header length 2**60": struct.pack("<Q", 1 << 60) + st[8:],
            "header not JSON": struct.pack("<Q", 10) + b"{notjson!!" + st[18:],
            "offsets past the end": struct.pack("<Q", len(beyond)) + beyond + st[8 + n:],
            "unknown dtype": struct.pack("<Q", len(dtype)) + dtype + st[8 + n:],
            "last byte cut": st[:-1]}


def hf_cases(hf: Path) -> list[tuple[str, object, int, str]]:
    """(name, how to break a copy of the HF folder, expected exit, the file the line must name)."""
    st = (hf / "model.safetensors").read_bytes()
    cfg = json.loads((hf / "config.json").read_text())
    cases = [(f"safetensors {k}", lambda d, b=b: (d / "model.safetensors").write_bytes(b), 5, "model.safetensors")
             for k, b in _safetensors_variants(st).items()]
    cases += [
        ("pickle only", lambda d: ((d / "model.safetensors").unlink(), (d / "pytorch_model.bin").write_bytes(b"x")),
         2, "pytorch_model.bin"),
        ("config.json not JSON", lambda d: (d / "config.json").write_text("{bad"), 2, "config.json"),
        ("config.json 100k deep", lambda d: (d / "config.json").write_text("[" * 100000 + "]" * 100000),
         2, "config.json"),
        ("config.json not UTF-8", lambda d: (d / "config.json").write_bytes(b'{"model_type": "\xff"}'), 2,
         "config.json"),
        ("huge dimensions", lambda d: (d / "config.json").write_text(json.dumps(
            {**cfg, "hidden_size": 1 << 40, "intermediate_size": 1 << 40})), 2, "config.json"),
        ("tokenizer.json garbage", lambda d: (d / "tokenizer.json").write_bytes(bytes(range(256)) * 8), 5,
         "tokenizer.json"),
        ("tokenizer.json another schema", lambda d: (d / "tokenizer.json").write_text('{"model": 1}'), 5,
         "tokenizer.json"),
    ]
    return cases


def one_line_naming(code, err, expected, name, case):
    assert code == expected, (case, code, err)
    assert err.count("\n") == 1 and name in err and "--debug" not in err, (case, err)


def test_fuzz_hostile_model_folders_exit_2_or_5_naming_the_file(hf_folder, tmp_path, capsys):
    import shutil
    run, hf = hf_folder
    for k, (case, edit, expected, name) in enumerate(hf_cases(hf)):
        d = tmp_path / f"case{k}"
        shutil.copytree(hf, d)
        edit(d)
        code, _, err = run_quiet(capsys, ["generate", str(d), "--prompt", "hi", "--max-new-tokens", "2"])
        one_line_naming(code, err, expected, name, f"generate: {case}")
        code, _, err = run_quiet(capsys, ["import", str(d), str(tmp_path / f"imported{k}")])
        one_line_naming(code, err, expected, name, f"import: {case}")
    # and as a training stage's starting point
    d = tmp_path / "case0"
    data = tmp_path / "sft.jsonl"
    from test_align_utils import make_sft_file
    make_sft_file(data, n=8)
    code, _, err = run_quiet(capsys, ["sft", "--quiet", "--set", f"init.from_checkpoint={d}", "--set", f"data=[{data}]",
                                      "--set", f"out_dir={tmp_path / 'sft'}", "--set", "train.seq_len=128",
                                      "--set", "max_steps=1"])
    one_line_naming(code, err, 5, "model.safetensors", "sft from a damaged HF folder")


CONFIG_CASES = [   # (--set values or a config file's bytes, expected exit, what the line names)
    (["train.optim.lr=1.0e+300"], 2, "lr"),
    (["train.optim.lr=1.0e+30"], 2, "lr"),
    (["train.steps=1.0e+30"], 2, "steps"),
    (["data=!!python/object/apply:os.system ['true']"], 2, "--set"),
    (["train.optim.eps=1.0e+39"], 2, "eps"),
    (b"train:\n  steps: 10\nsystem: caf\xe9\n", 2, "bad.yaml"),
]


@pytest.mark.parametrize("case,expected,name", CONFIG_CASES)
def test_fuzz_hostile_configs_exit_2_naming_the_key_or_file(token_data, tmp_path, capsys, case, expected, name):
    base = cli_args(token_data, tmp_path / "run", "train.steps=2")
    if isinstance(case, bytes):
        bad = tmp_path / "bad.yaml"
        bad.write_bytes(case)
        argv = [base[0], str(bad), *base[1:]]
    else:
        argv = [*base, *sum((["--set", s] for s in case), [])]
    code, _, err = run_quiet(capsys, argv)
    one_line_naming(code, err, expected, name, case)


# ------------------------------------------------------------------ full disks name the path


def enospc(*a, **k):
    import errno
    raise OSError(errno.ENOSPC, "No space left on device")   # as a real write reports it: no file name


def test_full_disk_while_saving_a_checkpoint_names_the_folder(token_data, tmp_path, capsys, monkeypatch):
    from lmforge.train import checkpoint as writer
    monkeypatch.setattr(writer.torch, "save", enospc)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=4"))
    assert code == 4 and err.count("\n") == 1 and "no space left" in err and str(out / "checkpoints") in err


def test_full_disk_while_writing_a_file_or_a_shard_names_it(token_data, tmp_path, capsys, monkeypatch):
    from lmforge.io import atomic
    monkeypatch.setattr(atomic.os, "fsync", enospc)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, cli_args(token_data, out, "train.steps=2"))
    assert code == 4 and err.count("\n") == 1 and "no space left" in err and str(out) in err
    monkeypatch.undo()

    from lmforge.io.writers import DocWriter

    class Full:
        def write(self, data):
            enospc()

        def close(self):
            pass
    w = DocWriter(tmp_path / "shard.jsonl")
    w._fh = Full()
    with pytest.raises(OSError) as e:
        w.write({"id": "a", "text": "b", "meta": {}})
    assert e.value.filename == str(tmp_path / "shard.jsonl")


# ------------------------------------------------------------------ a quiet recipe run


def test_quiet_recipe_run_prints_only_its_one_error_line(tmp_path, capsys):
    from test_recipe import mini_stages, write_recipe
    corpus = mini_stages()[0]
    broken = {"name": "data", "config": {"input": ["${corpus}/docs", "${corpus}/no-such-folder"],
                                         "steps": ["extract"], "workers": 1, "progress": False}}
    path = write_recipe(tmp_path, [corpus, broken], name="quiet")
    code, out, err = run_quiet(capsys, ["run", str(path), "--quiet"])
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and "no-such-folder" in err, (out, err)


# ------------------------------------------------------------------ grow is reproducible to the byte


def test_grow_writes_identical_checkpoints_in_two_runs(hf_folder, tmp_path):
    import os
    import subprocess
    import sys
    run, _ = hf_folder
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for name in ("a", "b"):   # separate processes: torch seeds itself at random on start-up
        proc = subprocess.run([sys.executable, "-m", "lmforge", "grow", "--quiet", "--set",
                               f"init.from_checkpoint={run}", "--set", f"out_dir={tmp_path / name}",
                               "--set", "block=[0, 1]"], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
    a, b = tmp_path / "a" / "checkpoints" / "step-0", tmp_path / "b" / "checkpoints" / "step-0"
    names = sorted(p.name for p in a.iterdir())
    assert "rng.pt" in names and names == sorted(p.name for p in b.iterdir())
    for n in names:
        if n in ("trainer.json", "meta.json"):   # they record the out_dir: compare all but paths
            ja, jb = json.loads((a / n).read_text()), json.loads((b / n).read_text())
            ja.get("config", {}).pop("out_dir", None), jb.get("config", {}).pop("out_dir", None)
            assert ja == jb, n
        else:
            assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_line_reader_agrees_with_a_plain_split_at_any_chunk_size(tmp_path, monkeypatch):
    """lmforge.io.lines against bytes.split on random lines (blank, CR, BOM, over the cap),
    with chunk boundaries anywhere: the same lines, numbers and sizes."""
    import random

    from lmforge.io import lines as L
    rng = random.Random(0)
    path = tmp_path / "l.jsonl"
    for _ in range(200):
        parts = [bytes(rng.choice(b"ab \r{}") for _ in range(rng.choice([0, 1, 5, 50, 300])))
                 for _ in range(rng.randint(0, 30))]
        data = (L.BOM if rng.random() < 0.3 else b"") + b"\n".join(parts) + (b"\n" if rng.random() < 0.5 else b"")
        limit = rng.choice([None, 10, 100])
        monkeypatch.setattr(L, "CHUNK", rng.choice([1, 3, 7, 64, 1 << 20]))
        path.write_bytes(data)
        got = [(x.number, x.raw if x.problem is None else None, x.problem, x.nbytes) for x in L.iter_lines(path, limit)]
        split = data.split(b"\n")
        if split[-1] == b"":
            split.pop()
        want = []
        for i, line in enumerate(split, 1):
            if limit is not None and len(line) > limit:
                want.append((i, None, "too_long", len(line)))
                continue
            raw = line[3:] if i == 1 and line.startswith(L.BOM) else line
            raw = raw[:-1] if raw.endswith(b"\r") else raw
            if raw and not raw.isspace():
                want.append((i, raw, None, len(line)))
        assert got == want, (data, limit)


def test_a_json_array_file_is_read_item_by_item_with_the_same_cap(chat_tok, tmp_path):
    """A lone .json array (not JSON lines) with one 50 MB item: the item is too_long by its
    position, never held whole; every other item is read; memory as for the file without it."""
    import random

    from test_align_utils import conversation
    rng = random.Random(0)
    good = [conversation(rng, 2) for _ in range(200)]
    huge = {"messages": [{"role": "user", "content": big_text(50 << 20)}, {"role": "assistant", "content": "ok"}]}
    normal, hostile = tmp_path / "normal.json", tmp_path / "hostile.json"
    normal.write_text(json.dumps(good, ensure_ascii=False, indent=1))
    hostile.write_text(json.dumps(good[:100] + [huge] + good[100:], ensure_ascii=False, indent=1))
    base = child_run(chat_tok, "sft", normal)
    hurt = child_run(chat_tok, "sft", hostile)
    assert hurt["stats"]["kept"] == base["stats"]["kept"] > 0
    assert hurt["stats"]["too_long"] == base["stats"]["too_long"] + 1
    assert [101, "too_long"] in hurt["rejects"]
    assert hurt["rss_mb"] - base["rss_mb"] < 300, (base["rss_mb"], hurt["rss_mb"])


def test_json_array_reader_matches_json_loads_at_every_block_boundary(tmp_path, monkeypatch):
    import random

    from lmforge.io import jsonarray
    monkeypatch.setattr(jsonarray, "BLOCK", 7)     # items, strings and escapes cut at every place
    rng = random.Random(1)

    def value(d=0):
        k = rng.random()
        if d > 3 or k < 0.3:
            return rng.choice([1, -2.5, True, None, 'a"b\\c', "中文\n", "x" * rng.randint(0, 30)])
        if k < 0.65:
            return [value(d + 1) for _ in range(rng.randint(0, 4))]
        return {f'k{i}"': value(d + 1) for i in range(rng.randint(0, 4))}
    for trial in range(150):
        items = [value() for _ in range(rng.randint(0, 6))]
        path = tmp_path / f"{trial}.json"
        path.write_text(json.dumps(items, ensure_ascii=trial % 2 == 0, indent=None if trial % 3 else 1))
        assert [(v, e) for _, v, e in jsonarray.iter_json_array(path, 1 << 30)] == [(v, None) for v in items]
        capped = list(jsonarray.iter_json_array(path, 20))
        assert len(capped) == len(items)
        assert all(v == it if e is None else e == "too_long" for (_, v, e), it in zip(capped, items))
        assert all(e is None for (_, _, e), it in zip(capped, items) if len(json.dumps(it, indent=1)) <= 8)
    (tmp_path / "cut.json").write_text('[{"a": 1}, {"b": ')
    assert [e for _, _, e in jsonarray.iter_json_array(tmp_path / "cut.json", 100)][-1].startswith("malformed")
