"""Bad input found by a fuzz pass over the command line: each case is one line naming the file,
line or key, with the project's exit code (lmforge.cli.errors), never a traceback or exit 1."""
import json

import pytest

from lmforge.cli import main
from lmforge.io.documents import ErrorSink


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from test_align_utils import make_tokenizer
    from lmforge.tokenizer.train import load_tokenizer
    return load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok")))


# ------------------------------------------------------------------ conversation roles


def msgs(role) -> list[dict]:
    return [{"role": role, "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]


@pytest.mark.parametrize("role", [["user"], {"name": "user"}])
def test_a_role_that_is_a_list_or_mapping_is_a_malformed_record(tok, tmp_path, role):
    # was TypeError: unhashable type (`lmforge sft` exit 1, "rerun with --debug")
    from lmforge.align.preference_data import load_pairs
    from lmforge.align.sft_data import load_conversations
    f = tmp_path / "sft.jsonl"
    f.write_text(json.dumps({"messages": msgs("user")}) + "\n" + json.dumps({"messages": msgs(role)}) + "\n")
    with ErrorSink(tmp_path / "rejects.jsonl") as sink:
        convs, stats = load_conversations([str(f)], tok, 128, 8, sink)
    assert len(convs) == 1 and stats["malformed"] == 1
    rej = [json.loads(l) for l in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rej] == [(2, "malformed")] and "messages[0].role" in rej[0]["detail"]

    p = tmp_path / "dpo.jsonl"
    p.write_text(json.dumps({"prompt": "Hi?", "chosen": "Yes.", "rejected": "No."}) + "\n" +
                 json.dumps({"prompt": msgs(role)[:1], "chosen": "Yes.", "rejected": "No."}) + "\n")
    with ErrorSink(tmp_path / "rejects2.jsonl") as sink:
        pairs, stats = load_pairs([str(p)], tok, 128, sink)
    assert len(pairs) == 1 and stats["malformed"] == 1
