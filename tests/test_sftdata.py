"""`lmforge sftdata`: every step counted and its drops kept aside; prompt dedup on real text
with planted near-duplicates; reward-model and judge scoring (plumbing and ordering);
diversity sampling evens a skewed set; system-prompt balance; weights and caps; prompt
evolution (elimination rules, and the plumbing with a tiny generator)."""
from __future__ import annotations

import ast
import json
import random
import re
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge import config
from lmforge.align import curate, diversity, evolve, system_balance
from lmforge.align.curate import Item
from lmforge.config import ConfigError
from lmforge.stages.sftdata import SFTDataConfig, run
from test_align_utils import THINGS, color_of, make_source, write_jsonl


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("src"))


def cfg_of(data, out, *extra) -> SFTDataConfig:
    return config.load(SFTDataConfig, None, [f"data={[str(d) for d in data]}", f"out_dir={out}", *extra])


def conv(prompt: str, reply: str, system: str = "", **top) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    return {"messages": msgs, **top}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def assert_funnel_adds_up(report: dict):
    prev_kept = None
    for s in report["steps"]:
        for unit in ("docs", "bytes"):
            lhs = s["in"][unit] + sum(v[unit] for v in s["added"].values())
            assert lhs == s["kept"][unit] + sum(v[unit] for v in s["removed"].values()), (s["step"], unit)
        if prev_kept is not None:
            assert s["in"] == prev_kept, s["step"]      # each step reads what the one before kept
        prev_kept = s["kept"]


# ------------------------------------------------------------------ real text with planted duplicates


def stdlib_paragraphs(n: int = 160) -> list[str]:
    """First paragraphs (25-80 words) of stdlib docstrings, mutually dissimilar: real, unique text."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    out, shingles = [], []
    for f in sorted(lib.glob("*.py")):
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                para = " ".join((doc or "").split("\n\n")[0].split())
                if not 25 <= len(para.split()) <= 80:
                    continue
                sh = _shingles(para)
                if all(len(sh & o) / len(sh | o) < 0.3 for o in shingles):
                    out.append(para)
                    shingles.append(sh)
                if len(out) == n:
                    return out
    return out


def _shingles(text: str, n: int = 3) -> set:
    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i:i + n]) for i in range(max(1, len(w) - n + 1))}


def edit(text: str, rng: random.Random, rate: float = 0.04) -> str:
    """A copy with ~rate of its words replaced, deleted or doubled (at least one edit)."""
    words = text.split()
    for _ in range(max(1, round(rate * len(words)))):
        i = rng.randrange(len(words))
        op = rng.choice(["replace", "delete", "insert"])
        if op == "replace":
            words[i] = rng.choice(["data", "value", "object", "string", "result"])
        elif op == "delete" and len(words) > 5:
            del words[i]
        else:
            words.insert(i, words[i])
    return " ".join(words)


def test_dedup_counts_planted_exact_and_near_duplicates(tmp_path):
    rng = random.Random(1)
    paras = stdlib_paragraphs()
    assert len(paras) >= 120
    originals = [conv(f"Explain this documentation: {p}", f"It says: {p[:60]}") for p in paras]
    exact = [conv("  " + o["messages"][0]["content"].upper() + " ", "another reply") for o in rng.sample(originals, 20)]
    near_src = rng.sample(originals, 40)
    near = [conv(edit(o["messages"][0]["content"], rng), "a reply") for o in near_src]
    recs = originals + exact + near
    rng.shuffle(recs)
    bad = ["{not json", json.dumps({"messages": [{"role": "robot", "content": "x"}]}),
           json.dumps({"messages": [{"role": "user", "content": "hi"}]})]
    path = write_jsonl(tmp_path / "convs.jsonl", recs + bad)
    out = tmp_path / "out"
    run(cfg_of([path], out), progress=False)
    report = json.loads((out / "sftdata.json").read_text())
    assert_funnel_adds_up(report)
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["read"]["removed"] == {"malformed": {"docs": 2, "bytes": 0}, "no_assistant": {"docs": 1, "bytes": 0}}
    assert len(read_jsonl(out / "rejects.jsonl")) == 3
    # each planted exact copy (case and spacing changed) is one drop, whichever copy came first
    assert steps["exact_dedup"]["removed"]["exact_duplicate"]["docs"] == 20
    n_near = steps["near_dedup"]["removed"]["near_duplicate"]["docs"]
    assert 36 <= n_near <= 40, n_near                   # recall >= 90% at ~4% word edits, no false hits
    kept = read_jsonl(out / "sft.jsonl")
    assert len(kept) == len(paras) + (40 - n_near)
    kept_norm = {curate.normalise(r["messages"][0]["content"]) for r in kept}
    copies = {id(o): [curate.normalise(n["messages"][0]["content"])] for o, n in zip(near_src, near)}
    for o in originals:   # every original survives, or one of its copies does in its place
        forms = [curate.normalise(o["messages"][0]["content"]), *copies.get(id(o), [])]
        assert any(f in kept_norm for f in forms)
    rej = read_jsonl(out / "rejected" / "02-near_dedup.jsonl")
    assert len(rej) == n_near and {r["reason"] for r in rej} == {"near_duplicate"}
    assert all(r["record"]["messages"] and r["from"].startswith(str(path)) for r in rej)
    assert json.loads((out / "DONE.json").read_text())["conversations_out"] == len(paras)
    again = run(cfg_of([path], out), progress=False)
    assert again["skipped"]


# ------------------------------------------------------------------ diversity sampling


def test_even_quotas_water_filling():
    assert diversity.even_quotas([100, 30, 5, 2], 40) == [17, 16, 5, 2]
    assert diversity.even_quotas([10, 10, 10], 7) == [3, 2, 2]
    assert diversity.even_quotas([3, 1], 100) == [3, 1]
    assert diversity.even_quotas([], 5) == []
    for sizes, target in (([50, 7, 7, 3, 90], 33), ([1] * 9, 4), ([20, 19, 18], 40)):
        take = diversity.even_quotas(sizes, target)
        assert sum(take) == min(target, sum(sizes)) and all(t <= s for t, s in zip(take, sizes))
        open_ = [t for t, s in zip(take, sizes) if t < s]   # clusters with some left: within one of each other
        assert not open_ or max(take) - min(open_) <= 1


def skewed_topics(rng: random.Random) -> tuple[list[dict], list[str]]:
    """Prompts from four real-text topics, 70/20/7/3 percent: Python docs, Chinese poems,
    colours, arithmetic."""
    paras = stdlib_paragraphs(200)
    poems = ["床前明月光，疑是地上霜。举头望明月，低头思故乡。", "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
             "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。", "红豆生南国，春来发几枝。愿君多采撷，此物最相思。",
             "千山鸟飞绝，万径人踪灭。孤舟蓑笠翁，独钓寒江雪。", "松下问童子，言师采药去。只在此山中，云深不知处。"]
    recs, topics = [], []
    for k in range(140):
        recs.append(conv(f"What does this mean? {paras[k % len(paras)]}", "docs")); topics.append("docs")
    for k in range(40):
        recs.append(conv(f"请解释这首诗：{poems[k % 6]}{rng.choice(poems)[:5]}", "诗")); topics.append("poem")
    for k in range(14):
        t = rng.choice(THINGS)
        recs.append(conv(f"What color is the {t}, and why is the {t} {color_of(t)}?", "colour")); topics.append("color")
    for k in range(6):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        recs.append(conv(f"Compute {a} plus {b} and {a} times {b}, step by step, then add them", "math"))
        topics.append("math")
    return recs, topics


def test_diversity_sampling_evens_a_skewed_set(tmp_path):
    rng = random.Random(3)
    recs, topics = skewed_topics(rng)
    for r, t in zip(recs, topics):
        r["topic"] = t
    path = write_jsonl(tmp_path / "skewed.jsonl", recs)
    out = tmp_path / "out"
    run(cfg_of([path], out, "dedup.near=false", "dedup.exact=false", "diversity.target=40", "diversity.clusters=4"),
        progress=False)
    report = json.loads((out / "sftdata.json").read_text())
    assert_funnel_adds_up(report)
    d = report["steps"][-1]
    assert d["step"] == "diversity" and d["kept"]["docs"] == 40
    before, after = d["details"]["cluster_sizes_before"], d["details"]["cluster_sizes_after"]
    assert sum(before.values()) == 200 and sum(after.values()) == 40
    assert max(before.values()) >= 100                  # the clusters found the skew ...
    open_ = [after[c] for c in after if after[c] < before[c]]
    assert max(after.values()) - min(open_) <= 1        # ... and sampling evened it
    got = Counter(r["topic"] for r in read_jsonl(out / "sft.jsonl"))
    assert got["docs"] <= 16 and got["math"] == 6 and got["color"] >= 8, got   # 70% -> at most 40%
    clusters = {r["curation"]["cluster"] for r in read_jsonl(out / "sft.jsonl")}
    assert clusters == {int(c) for c in before}


# ------------------------------------------------------------------ system prompts


def test_share_cap():
    assert system_balance.share_cap([100, 10, 10, 10], 0.4) == (20, 0.4)   # 20 <= 0.4 * 50
    assert system_balance.share_cap([5, 5], 0.3) == (5, 0.5)               # 1/2 is the best two groups allow
    assert system_balance.share_cap([3, 4, 5], 1.0)[0] == 5                 # no cap


def test_system_prompt_balance_and_even_assignment(tmp_path):
    rng = random.Random(0)
    systems = ["You are a helpful assistant."] * 120 + ["You answer questions about colors."] * 30 + \
              ["Reply in one sentence."] * 10 + [""] * 40
    recs = [conv(f"What color is the {t}? (question {k})", f"The {t} is {color_of(t)}.", s)
            for k, (s, t) in enumerate(zip(systems, (rng.choice(THINGS) for _ in systems)))]
    path = write_jsonl(tmp_path / "sys.jsonl", recs)
    designed = ["Think step by step.", "Be concise.", "Answer like a teacher.", "Use simple words."]
    out = tmp_path / "out"
    run(cfg_of([path], out, "dedup.near=false", f"system.prompts={designed}", "system.assign_share=1.0",
               "system.max_share=0.25"), progress=False)
    report = json.loads((out / "sftdata.json").read_text())
    assert_funnel_adds_up(report)
    assign, bal = report["steps"][-2], report["steps"][-1]
    assert assign["details"]["assigned"] == {p: 10 for p in designed}        # 40 without: 10 each
    assert assign["added"]["system_prompt_assigned"]["docs"] == 0
    kept = read_jsonl(out / "sft.jsonl")
    shares = Counter(r["messages"][0]["content"] for r in kept)
    assert max(shares.values()) / len(kept) <= 0.25 + 1e-9
    assert bal["details"]["largest_share_before"] == pytest.approx(120 / 200)
    assert bal["details"]["largest_share_after"] <= 0.25
    assert all(r["messages"][0]["role"] == "system" for r in kept)
    # the cap: c <= 0.25 * (c + c + 10 + 4*10) -> c = 25
    assert shares["You are a helpful assistant."] == 25 and shares["Reply in one sentence."] == 10


def test_system_balance_by_cluster_groups_paraphrases():
    items = [Item(conv("q", "a", s), "f:1") for s in
             ["You are a helpful assistant."] * 3 + ["You are a very helpful assistant!"] * 3 +
             ["Translate the text to French."] * 2]
    keys = ["A"] * 6 + ["B"] * 2                            # as a clustering of the system prompts would give
    res = system_balance.balance(items, 0.5, 0, keys)
    assert len(res.kept) == 4 and res.details["cap"] == 2


# ------------------------------------------------------------------ weights and caps


def test_source_and_task_weights_and_caps(tmp_path):
    recs = [conv(f"q{k} about {t}", f"a{k}", task=t, meta={"source": s})
            for s, t, n in (("setA", "chat", 60), ("setB", "code", 10), ("setC", "math", 30)) for k in range(n)]
    path = write_jsonl(tmp_path / "mix.jsonl", recs)
    out = tmp_path / "out"
    run(cfg_of([path], out, "dedup.near=false", "weights.sources={setA: 0.5}", "weights.source_caps={setC: 12}",
               "weights.tasks={code: 2.5}", "weights.task_caps={chat: 20}"), progress=False)
    report = json.loads((out / "sftdata.json").read_text())
    assert_funnel_adds_up(report)
    src, task = report["steps"][-2], report["steps"][-1]
    assert src["details"]["source_after"] == {"setA": 30, "setC": 12, "setB": 10}
    assert src["removed"] == {"source_cap": {"docs": 18, "bytes": src["removed"]["source_cap"]["bytes"]},
                              "source_weight": {"docs": 30, "bytes": src["removed"]["source_weight"]["bytes"]}}
    assert task["details"]["task_after"] == {"code": 25, "chat": 20, "math": 12}
    assert task["added"]["upsampled"]["docs"] == 15 and task["removed"]["task_cap"]["docs"] == 10
    kept = read_jsonl(out / "sft.jsonl")
    assert Counter(r["curation"]["origin"] for r in kept) == {"input": 42, "upsampled": 15}
    code = Counter(r["messages"][0]["content"] for r in kept if r["task"] == "code")
    assert sorted(code.values()) == [2] * 5 + [3] * 5    # 2.5x: two full copies, then half again


# ------------------------------------------------------------------ scoring


def make_reward_model(folder: Path) -> tuple[Path, object]:
    """A one-layer Llama reward model whose score grows with the share of the word "good" among
    the tokens: embeddings flag "good" in dimension 0, attention is uniform (zero queries and
    keys), the value/output projections carry the flag's mean to the last token and the head
    reads it back after the final RMSNorm (a / sqrt(a^2 + 1): increasing)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForSequenceClassification, PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "good", "bad", "the", "answer", "is", "fine", "okay", "reply", "what", "?"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]")
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=1, num_key_value_heads=1, num_labels=1, pad_token_id=0,
                      max_position_embeddings=256)
    model = LlamaForSequenceClassification(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        emb = model.model.embed_tokens.weight
        emb[:, 1] = 1.0
        emb[words.index("good"), 0] = 1.0
        layer = model.model.layers[0]
        for norm in (layer.input_layernorm, layer.post_attention_layernorm, model.model.norm):
            norm.weight.fill_(1.0)
        layer.self_attn.v_proj.weight[0, 0] = 1.0
        layer.self_attn.o_proj.weight[0, 0] = 1.0
        model.score.weight[0, 0] = 1.0
    model.save_pretrained(folder)          # safetensors
    tok.save_pretrained(folder)
    return folder, tok


def test_reward_model_scores_plumbing_and_ordering(tmp_path):
    pytest.importorskip("transformers")
    from lmforge.eval.reward import RewardModel

    folder, tok = make_reward_model(tmp_path / "rm")
    rng = random.Random(0)
    recs = []
    for k in range(24):   # replies of different lengths (padding in batches) and shares of "good"
        n = rng.randint(4, 14)
        g = rng.randint(0, n)
        words = ["good"] * g + [rng.choice(["bad", "fine", "okay", "the", "reply"]) for _ in range(n - g)]
        rng.shuffle(words)
        recs.append(conv(f"what is the answer {k} ?", " ".join(words), task=f"t{k % 2}"))
    rm = RewardModel(folder, batch_size=5)
    scores = rm([r["messages"] for r in recs])
    alone = [RewardModel(folder, batch_size=1)([r["messages"]])[0] for r in recs[:6]]
    assert scores[:6] == pytest.approx(alone, abs=1e-5)                 # padding does not change a score
    share = [(ids := tok(rm.text(r["messages"]))["input_ids"]).count(tok.convert_tokens_to_ids("good")) / len(ids)
             for r in recs]
    order = np.argsort(scores, kind="stable")
    assert all(share[order[i]] <= share[order[i + 1]] + 1e-12 for i in range(len(order) - 1))
    assert len(set(np.round(scores, 6))) >= 10                          # not a constant

    path = write_jsonl(tmp_path / "convs.jsonl", recs)
    out = tmp_path / "out"
    run(cfg_of([path], out, "dedup.exact=false", "dedup.near=false", "scoring.kind=reward",
               f"scoring.model={folder}", "scoring.top_share=0.5"), progress=False)
    report = json.loads((out / "sftdata.json").read_text())
    assert_funnel_adds_up(report)
    kept = read_jsonl(out / "sft.jsonl")
    assert len(kept) == 12 and report["steps"][-1]["removed"]["below_top_share"]["docs"] == 12
    for t in ("t0", "t1"):   # per task: every kept score beats every dropped one
        ks = [r["curation"]["score"] for r in kept if r["task"] == t]
        ds = [r["record"]["curation"]["score"] for r in read_jsonl(out / "rejected" / "01-score.jsonl")
              if r["task"] == t]
        assert len(ks) == 6 and min(ks) >= max(ds)
    assert list((out / "work" / "scores").glob("part-*.json"))


def test_reward_model_errors(tmp_path, monkeypatch):
    from lmforge.eval.reward import RewardModel

    (tmp_path / "rm").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        RewardModel(tmp_path / "rm")
    (tmp_path / "rm" / "config.json").write_text("{}")
    (tmp_path / "rm" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="safetensors"):
        RewardModel(tmp_path / "rm")
    (tmp_path / "rm" / "model.safetensors").write_bytes(b"")
    import builtins
    real_import = builtins.__import__

    def no_transformers(name, *a, **k):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("no transformers")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(ConfigError, match="needs the `transformers` package"):
        RewardModel(tmp_path / "rm")


def test_judge_matches_brute_force_and_prefers_fluent_replies(source, tmp_path):
    from lmforge.eval.judge import judge_scores
    from lmforge.model.load import load_checkpoint
    from lmforge.tokenizer.train import load_tokenizer
    from lmforge.align.chat_template import encode_chat

    src_run, tok_dir = source
    model, _ = load_checkpoint(src_run)
    tok = load_tokenizer(tok_dir)
    rng = random.Random(0)
    convs = [conv(f"What color is the {t}?", f"The {t} is {color_of(t)}.")["messages"] for t in THINGS[:6]]
    convs.append([{"role": "system", "content": "Be brief."}, *convs[0], {"role": "user", "content": "And?"},
                  {"role": "assistant", "content": "Nothing more."}])
    got = judge_scores(model, tok, convs, batch_size=3, pad_id=1)
    for msgs, score in zip(convs, got):   # reference: one conversation at a time, float64 log-softmax
        ids, mask = encode_chat(tok, msgs, "all")
        with torch.no_grad():
            logits = model(torch.as_tensor(ids[None, :-1], dtype=torch.long)).double()[0]
        logp = torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.as_tensor(ids[1:], dtype=torch.long)]
        assert score == pytest.approx(logp[torch.as_tensor(mask[1:])].mean().item(), abs=1e-4)

    # ordering: after a short SFT on colour answers, fluent replies beat scrambled ones of the same length
    from lmforge.stages.sft import SFTConfig, run as sft_run
    train = write_jsonl(tmp_path / "train.jsonl", [conv(f"What color is the {t}?", f"The {t} is {color_of(t)}.")
                                                   for t in THINGS * 4])
    sft_out = tmp_path / "sft"
    sft_run(config.load(SFTConfig, None, [f"init.from_checkpoint={src_run}", f"data=[{train}]", f"out_dir={sft_out}",
                                          "train.seq_len=64", "train.micro_batch_size=8", "train.optim.lr=1e-2",
                                          "epochs=6"]), progress=False)
    recs = []
    for k, t in enumerate(THINGS):
        good = f"The {t} is {color_of(t)}."
        chars = list(good)
        rng.shuffle(chars)
        recs.append(conv(f"What color is the {t}?", good, task="colors", quality="good"))
        recs.append(conv(f"Tell me the color of the {t}.", "".join(chars), task="colors", quality="bad"))
    path = write_jsonl(tmp_path / "judge.jsonl", recs)
    out = tmp_path / "out"
    judge = ["dedup.exact=false", "dedup.near=false", "scoring.kind=judge", f"scoring.model={sft_out}"]
    run(cfg_of([path], out, *judge, "scoring.top_share=0.5"), progress=False)
    kept = read_jsonl(out / "sft.jsonl")
    assert Counter(r["quality"] for r in kept) == {"good": len(THINGS)}
    rejected = read_jsonl(out / "rejected" / "01-score.jsonl")
    assert len(rejected) == len(THINGS) and {r["reason"] for r in rejected} == {"below_top_share"}
    # a threshold drops by value and says so
    out2 = tmp_path / "out2"
    cut = (min(r["curation"]["score"] for r in kept) + max(r["record"]["curation"]["score"] for r in rejected)) / 2
    run(cfg_of([path], out2, *judge, f"scoring.threshold={cut}"), progress=False)
    rep = json.loads((out2 / "sftdata.json").read_text())["steps"][-1]
    assert rep["kept"]["docs"] == len(THINGS) and rep["removed"]["low_score"]["docs"] == len(THINGS)


# ------------------------------------------------------------------ prompt evolution


def test_evolution_template_and_elimination_rules():
    p = evolve.evolution_prompt("Sort a list.", "reasoning")
    assert "#The Given Prompt#:\nSort a list.\n#Rewritten Prompt#:\n" in p and "multiple-step reasoning" in p
    assert "#Created Prompt#" in evolve.evolution_prompt("Sort a list.", "breadth")
    with pytest.raises(ValueError, match="unknown evolution method"):
        evolve.evolution_prompt("x", "shorten")
    ok = "Sort a list of integers in place without using the built-in sort, and explain each step."
    assert evolve.eliminate("Sort a list.", ok, "First, compare the neighbours ...") is None
    assert evolve.eliminate("Sort a list.", "sort a  LIST.", "Use sorted().") == "no_information_gain"
    assert evolve.eliminate("Sort a list.", "Sort, a list!", "Use sorted().") == "no_information_gain"
    assert evolve.eliminate("Sort a list.", "#Rewritten Prompt#: sort more", "ok then") == "copied_template"
    assert evolve.eliminate("Sort a list.", "Rewrite the given prompt harder", "ok") == "copied_template"
    assert evolve.eliminate("Sort a list.", ok, "Sorry, I cannot help with that.") == "model_refused"
    assert evolve.eliminate("Sort a list.", ok, "I am sorry " + "word " * 90) is None   # long: not a refusal
    assert evolve.eliminate("Sort a list.", ok, "It is the, and... of!") == "empty_response"
    assert evolve.eliminate("Sort a list.", "   ", "x") == "empty_prompt"
    assert evolve.clean_evolved("#Rewritten Prompt#:\n  Do more.  ") == "Do more."


def test_evolve_rounds_with_a_scripted_generator():
    """A deterministic generator: every other evolution copies the template words (eliminated)."""
    items = [Item(conv(f"Name the color of the {t}.", f"{color_of(t)}."), f"f:{k}", "colors")
             for k, t in enumerate(THINGS)]
    items.append(Item({"messages": [*conv("a", "b")["messages"], {"role": "user", "content": "c"},
                                    {"role": "assistant", "content": "d"}]}, "f:99"))   # multi-turn: not evolved
    calls = []

    def gen(convs):
        calls.append(convs)
        out = []
        for c in convs:
            text = c[-1]["content"]
            if text.startswith("I want you act as"):
                given = text.split("Prompt#:\n")[1].split("\n#")[0]
                more = ["Explain why in detail.", "Then compare both answers carefully."][given.count("Explain")]
                out.append(f"{given} as the #Rewritten Prompt# says" if len(out) % 2 else f"{given} {more}")
            else:
                out.append(f"Because of how light is reflected: {text[:20]}")
        return out
    added, failed, details = evolve.evolve(items, gen, ["deepen", "reasoning"], rounds=2, share=1.0, seed=0)
    assert details["single_turn"] == len(THINGS)
    r1, r2 = details["per_round"]
    assert r1 == {"round": 1, "tried": 12, "survived": 6} and r2 == {"round": 2, "tried": 6, "survived": 3}
    assert len(added) == 9 and len(failed) == 9 and {d.reason for d in failed} == {"evolution_copied_template"}
    assert all(a.origin == "evolved" and a.messages[-1]["role"] == "assistant" for a in added)
    second = [a for a in added if a.rec["evolution"]["round"] == 2]
    assert all(a.prompt.endswith("Explain why in detail. Then compare both answers carefully.") for a in second)
    assert len(calls) == 4   # per round: one batch of rewrites, one of answers


def test_evolve_stage_plumbing_with_a_tiny_generator(source, tmp_path, monkeypatch):
    src_run, _ = source
    recs = [conv(f"What color is the {t}?", f"The {t} is {color_of(t)}.") for t in THINGS]
    path = write_jsonl(tmp_path / "c.jsonl", recs)
    out = tmp_path / "out"
    evo = ["dedup.exact=false", "dedup.near=false", f"evolve.generator={src_run}", "evolve.max_new_tokens=12",
           "evolve.share=0.5", "evolve.rounds=2", "evolve.temperature=1.0"]
    run(cfg_of([path], out, *evo), progress=False)
    report = json.loads((out / "sftdata.json").read_text())
    assert_funnel_adds_up(report)
    ev = report["steps"][-1]
    assert ev["step"] == "evolve" and ev["details"]["per_round"][0]["tried"] == 6
    n_added = ev["added"].get("evolved", {"docs": 0})["docs"]
    n_failed = sum(ev["details"]["eliminated"].values())
    tried = sum(r["tried"] for r in ev["details"]["per_round"])
    assert n_added + n_failed == tried and ev["kept"]["docs"] == len(THINGS) + n_added
    rejected = read_jsonl(out / "rejected" / "01-evolve.jsonl") if n_failed else []
    assert len(rejected) == n_failed and all(r["reason"].startswith("evolution_") for r in rejected)
    gens = {k: v for p in (out / "work" / "generations").glob("part-*.json")
            for k, v in json.loads(p.read_text()).items()}
    assert len(gens) >= 2 * 6                            # rewrites + answers of round 1, cached
    # a rerun after an interruption reuses the cached generations (generating again would fail)
    (out / "DONE.json").unlink()
    import lmforge.infer.generate as gen_mod

    def no_generation(*a, **k):
        raise AssertionError("generated again")
    monkeypatch.setattr(gen_mod, "generate", no_generation)
    run(cfg_of([path], out, *evo), progress=False)
    assert json.loads((out / "sftdata.json").read_text())["steps"][-1] == ev


# ------------------------------------------------------------------ config and CLI


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="data"):
        cfg_of([], tmp_path)
    with pytest.raises(ConfigError, match="scoring.model"):
        cfg_of(["x.jsonl"], tmp_path, "scoring.kind=judge")
    with pytest.raises(ConfigError, match="diversity.bogus"):
        cfg_of(["x.jsonl"], tmp_path, "diversity.bogus=1")
    with pytest.raises(ConfigError, match="system.max_share"):
        cfg_of(["x.jsonl"], tmp_path, "system.max_share=0")
    cfg = cfg_of(["x.jsonl"], tmp_path, "dedup.minhash.threshold=0.9")
    assert cfg.dedup.minhash.ngram == 2 and cfg.dedup.minhash.threshold == 0.9   # prompt defaults kept
    with pytest.raises(ConfigError, match="data: .*no such file"):
        run(cfg_of([tmp_path / "missing.jsonl"], tmp_path / "o"), progress=False)


def test_cli_and_sft_reads_the_output(source, tmp_path, capsys):
    from lmforge.align.sft_data import load_conversations
    from lmforge.cli import main
    from lmforge.io.documents import ErrorSink
    from lmforge.tokenizer.train import load_tokenizer

    _, tok_dir = source
    recs = [conv(f"What color is the {t}?", f"The {t} is {color_of(t)}.", task="colors") for t in THINGS] * 2
    path = write_jsonl(tmp_path / "c.jsonl", recs)
    out = tmp_path / "out"
    assert main(["sftdata", "--data", str(path), "--set", f"out_dir={out}", "--quiet"]) == 0
    assert "conversations_out 12" in capsys.readouterr().out   # the one-line summary
    convs, stats = load_conversations([str(out / "sft.jsonl")], load_tokenizer(tok_dir), 128, 8, ErrorSink(None))
    assert stats["kept"] == 12 and stats["malformed"] == 0
    assert main(["sftdata", "--set", f"out_dir={out}"]) == 2        # no data: a config error, exit 2


def test_reads_the_sft_formats_and_writes_messages(tmp_path):
    recs = [{"instruction": "Name a colour", "input": "of the sky", "output": "blue", "task": "alpaca"},
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}],
             "system": "Be kind.", "task": "sharegpt"},
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
                          {"role": "assistant", "content": "4"}], "task": "parts"},
            {"text": "plain text to pretrain on"},
            {"prompt": "The sky is", "completion": " blue."}]
    path = write_jsonl(tmp_path / "mixed.jsonl", recs)
    out = tmp_path / "out"
    run(cfg_of([path], out), progress=False)
    read = json.loads((out / "sftdata.json").read_text())["steps"][0]
    assert read["removed"] == {"not_a_conversation": {"docs": 2, "bytes": 0}}
    kept = read_jsonl(out / "sft.jsonl")
    assert [r["task"] for r in kept] == ["alpaca", "sharegpt", "parts"]
    assert kept[0]["messages"] == [{"role": "user", "content": "Name a colour\nof the sky"},
                                   {"role": "assistant", "content": "blue"}]
    assert "instruction" not in kept[0] and kept[1]["messages"][0] == {"role": "system", "content": "Be kind."}
    assert kept[2]["messages"][0]["content"] == "What is 2+2?"
    assert {r["reason"] for r in read_jsonl(out / "rejects.jsonl")} == {"not_a_conversation"}
