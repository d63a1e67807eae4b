"""Bad input found by a fuzz pass over the command line: each case is one line naming the file,
line or key, with the project's exit code (lmforge.cli.errors), never a traceback or exit 1."""
import json
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.io.documents import ErrorSink


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from test_align_utils import make_tokenizer
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def tok(tok_dir):
    from lmforge.tokenizer.train import load_tokenizer
    return load_tokenizer(tok_dir)


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


# ------------------------------------------------------------------ a tokenizer folder's JSON side files


@pytest.mark.parametrize("name,data", [("lmforge_tokenizer.json", b"garbage"), ("tokenizer_config.json", b"{bad"),
                                       ("tokenizer_config.json", b"[1, 2]"), ("lmforge_tokenizer.json", b"\xff")])
def test_a_damaged_tokenizer_side_file_is_exit_5_naming_it(tok_dir, tmp_path, capsys, name, data):
    # was JSONDecodeError, exit 1 ("rerun with --debug"), from encode, export and sft alike
    import shutil
    d = tmp_path / "tok"
    shutil.copytree(tok_dir, d)
    if name != "lmforge_tokenizer.json":
        (d / "lmforge_tokenizer.json").unlink()   # else the side file answers first
    (d / name).write_bytes(data)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document number {i} about the sky"}) + "\n" for i in range(4)))
    code, _, err = run_cli(capsys, "tokenizer", "encode", "--quiet", "--set", f"inputs=[{docs}]",
                           "--set", f"tokenizer={d}", "--set", f"out_dir={tmp_path / 'tokens'}")
    assert code == 5 and err.count("\n") == 1 and str(d / name) in err and "--debug" not in err, err


def test_a_damaged_special_tokens_map_is_a_data_error_naming_it(tok_dir, tmp_path):
    import shutil

    from lmforge.align.chat_format import special_strings
    from lmforge.io.account import DataError
    d = tmp_path / "tok"
    shutil.copytree(tok_dir, d)
    (d / "special_tokens_map.json").write_text('{"eos_token": ')
    with pytest.raises(DataError, match="special_tokens_map.json"):
        special_strings(d)


# ------------------------------------------------------------------ sampling options


@pytest.mark.parametrize("cmd", ["generate", "chat"])
@pytest.mark.parametrize("option,value,says", [("--temperature", "-1", "temperature"), ("--temperature", "nan", "temperature"),
                                               ("--top-p", "5", "top_p"), ("--top-k", "-1", "top_k"),
                                               ("--max-new-tokens", "-3", "max_new_tokens")])
def test_bad_sampling_options_are_refused_before_a_model_is_loaded(tmp_path, capsys, cmd, option, value, says):
    # were checked after loading the model, once the prompt was already printed ("hilmforge generate: ...");
    # a model folder that does not exist shows which check comes first
    argv = [cmd, str(tmp_path / "no-such-run"), option, value] + (["--prompt", "hi"] if cmd == "generate" else [])
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and says in err and "no-such-run" not in err, err


# ------------------------------------------------------------------ export's tokenizer


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from test_align_utils import make_source
    return make_source(tmp_path_factory.mktemp("src"))[0]


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_export_with_a_damaged_tokenizer_writes_nothing(source, tmp_path, capsys, fmt):
    # the weights were written first, then the tokenizer failed: a folder with config.json and
    # model.safetensors but no usable tokenizer was left under the output name (hf), and GGUF's
    # line did not name the file ("Expecting ',' delimiter: line 2 column 1")
    import shutil
    run = tmp_path / "run"
    shutil.copytree(source, run)
    (run / "tokenizer" / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 5\n')
    out = tmp_path / ("out.gguf" if fmt == "gguf" else "out")
    code, _, err = run_cli(capsys, "export", str(run), str(out), "--format", fmt)
    assert code == 5 and str(run / "tokenizer" / "tokenizer.json") in err.splitlines()[-1], err
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
def test_export_names_the_tokenizer_folder_it_was_given(source, tmp_path, capsys, fmt):
    # it said "no tokenizer folder found beside the checkpoint ...; pass --tokenizer DIR" to a user who had
    missing = tmp_path / "no-such-tokenizer"
    code, _, err = run_cli(capsys, "export", str(source), str(tmp_path / "out"), "--format", fmt,
                           "--tokenizer", str(missing))
    last = err.splitlines()[-1]
    assert code == 2 and str(missing) in last and "pass --tokenizer" not in last, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ why a folder holds no model


def test_no_model_found_says_why(source, tmp_path, capsys):
    # each was the same "no model found: give a step-N folder, ..." whatever the folder held
    import shutil
    unfinished = tmp_path / "unfinished"
    shutil.copytree(source, unfinished)
    (unfinished / "checkpoints" / "step-1" / "meta.json").unlink()      # a save killed before its marker
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    shutil.copy2(unfinished / "checkpoints" / "step-1" / "model.safetensors", weights_only)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = [(tmp_path / "no-such-run", "no such file or folder"), (a_file, "a file, not a folder"),
             (unfinished, "step-1: no valid meta.json"), (weights_only, "model.safetensors but no config.json")]
    for path, why in cases:
        for argv in (["generate", str(path), "--prompt", "hi"], ["import", str(path), str(tmp_path / "imp")],
                     ["sft", "--quiet", "--set", f"init.from_checkpoint={path}", "--data", str(a_file)]):
            code, _, err = run_cli(capsys, *argv)
            assert code == 2 and err.count("\n") == 1 and str(path) in err and why in err, (argv, err)


# ------------------------------------------------------------------ recipes and config files


def test_an_unterminated_stage_reference_in_a_recipe_is_refused(tmp_path, capsys):
    # `${data/final` was kept as it is: a folder literally named "${data" at run time
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nstages:\n  - name: data\n    config: {input: [docs]}\n"
                      "  - name: tokenizer\n    config: {inputs: ['${data/final'], vocab_size: 300}\n")
    code, out, err = run_cli(capsys, "run", str(recipe), "--check")
    assert code == 2 and err.count("\n") == 1 and "stages[1].config.inputs[0]" in err and "${data/final" in err, err


@pytest.mark.parametrize("cmd", [["pretrain"], ["run"], ["data"]])
def test_a_folder_given_as_the_config_file_is_named_as_a_folder(tmp_path, capsys, cmd):
    # it said "config file not found" of a folder that is there
    code, _, err = run_cli(capsys, *cmd, str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and f"{tmp_path}: a folder, not a YAML config file" in err, err


# ------------------------------------------------------------------ a missing input makes no folders


def test_report_of_a_run_folder_that_does_not_exist_is_exit_2_and_makes_nothing(tmp_path, capsys):
    # a typo'd RUN_DIR was created (RUN_DIR/report/) and given an empty report, exit 0
    missing = tmp_path / "runs" / "tyny"
    code, _, err = run_cli(capsys, "report", str(missing))
    assert code == 2 and err.count("\n") == 1 and f"run_dir: {missing}: no such file or folder" in err, err
    assert not (tmp_path / "runs").exists()


def test_a_missing_input_leaves_no_new_output_folders(tmp_path, capsys):
    # the stage lock made out_dir's parents before the inputs were checked (an empty folder was left)
    out = tmp_path / "new" / "sft"
    code, _, err = run_cli(capsys, "sft", "--quiet", "--set", f"out_dir={out}", "--set", f"init.from_checkpoint={tmp_path}",
                           "--data", str(tmp_path / "no.jsonl"))
    assert code == 2 and "no.jsonl: no such file or folder" in err, err
    assert not (tmp_path / "new").exists()


def test_report_names_the_unreadable_files_of_a_folder_it_could_not_read(tmp_path, capsys):
    # every file unreadable: the folder had no content, its problems were dropped, and the report
    # was empty without a word on why
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": \n')
    (run / "DONE.json").write_text("{bad")
    code, _, err = run_cli(capsys, "report", str(run))
    assert code == 0, err
    md = (run / "report" / "report.md").read_text()
    assert f"{run / 'metrics.jsonl'}:1: malformed line skipped" in md and f"{run / 'DONE.json'}: unreadable" in md


# ------------------------------------------------------------------ sftdata's input account


def test_sftdata_counts_an_invalid_utf8_line_and_all_rejected_is_exit_5(tmp_path, capsys):
    # an invalid UTF-8 line was AssertionError (exit 1): read_items' count left out the reader's reasons;
    # every record malformed was exit 2 "config error", where the other stages say exit 5
    from test_align_utils import make_sft_file
    data = make_sft_file(tmp_path / "sft.jsonl", n=12)
    with open(data, "ab") as f:
        f.write(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')
    code, out, err = run_cli(capsys, "sftdata", "--quiet", "--set", f"data=[{data}]", "--set", f"out_dir={tmp_path / 'a'}")
    assert code == 0, err
    assert "[sftdata] read 13 records, kept 12, rejected 1 (invalid_utf8 1)" in out.splitlines()[-1], out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "robot", "content": "hi"}]}) + "\n")
    code, _, err = run_cli(capsys, "sftdata", "--quiet", "--set", f"data=[{bad}]", "--set", f"out_dir={tmp_path / 'b'}")
    assert code == 5 and err.count("\n") == 1 and "all 1 records" in err and "bad.jsonl:1" in err, err


# ------------------------------------------------------------------ token datasets


@pytest.mark.parametrize("damage,names", [("meta cut", "meta.json: not readable JSON"),
                                          ("meta a list", "meta.json: damaged (no dtype"),
                                          ("shard cut", "train-00000.tokens: ")])
def test_a_damaged_token_dataset_names_the_file(tmp_path, capsys, damage, names):
    # were "data: Expecting property name ...", KeyError (exit 1) and "data: mmap length is greater
    # than file size": none named the file
    from conftest import make_token_dataset
    from test_reliability_runs import cli_args
    data = make_token_dataset(tmp_path / "tokens")
    if damage == "meta cut":
        (data / "meta.json").write_text('{"format": ')
    elif damage == "meta a list":
        (data / "meta.json").write_text('[1]')
    else:
        f = data / "train-00000.tokens"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    code, _, err = run_cli(capsys, *cli_args(data, tmp_path / "run", "train.steps=1"))
    assert code == 5 and err.count("\n") == 1 and str(data / names.split(":")[0]) in err and names in err, err


def test_a_folder_given_as_conversation_data_is_named_as_a_folder(tok, tmp_path):
    # it said "no such file" of a folder that is there
    from lmforge.align.sft_data import load_conversations
    (tmp_path / "convs").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'convs'}: a folder, not a data file"):
        load_conversations([str(tmp_path / "convs")], tok, 128, 8, ErrorSink(None))


def test_a_prompt_file_not_utf8_or_blank_is_named(tmp_path, capsys):
    # "invalid UTF-8 in the input (...)" named no file; a blank file got "give --prompt TEXT ..."
    bad, blank = tmp_path / "bad.txt", tmp_path / "blank.txt"
    bad.write_bytes(b"hello\ncaf\xe9\n")
    blank.write_text("\n  \n")
    code, _, err = run_cli(capsys, "generate", str(tmp_path / "no-run"), "--prompt-file", str(bad))
    assert code == 5 and err.count("\n") == 1 and f"{bad}: not UTF-8 text" in err and "byte 9" in err, err
    code, _, err = run_cli(capsys, "generate", str(tmp_path / "no-run"), "--prompt-file", str(blank))
    assert code == 2 and err.count("\n") == 1 and f"{blank}: no prompts" in err, err


# ------------------------------------------------------------------ atomic writes


def test_a_local_copy_cut_short_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    # io.fs.copy said "through a temporary name" but wrote a local destination in place
    from lmforge.io import fs
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(b"x" * 100)

    def cut(f, g, n):
        g.write(f.read(10))
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fs.shutil, "copyfileobj", cut)
    with pytest.raises(OSError):
        fs.copy(src, dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.bin"]
    monkeypatch.undo()
    fs.copy(src, dst)
    assert dst.read_bytes() == src.read_bytes() and sorted(p.name for p in tmp_path.iterdir()) == ["dst.bin", "src.bin"]


# ------------------------------------------------------------------ longsft's input account


def test_longsft_keeps_bad_lines_aside_and_accounts_for_them(tok_dir, tmp_path, capsys):
    # bad lines were only logged (one warning line each, no rejects file), a general record without
    # `messages` was dropped without a word, and every document rejected was exit 2 "need at least 2
    # documents"
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": f"Document {i}. " + "The sky is blue and the sea is wide. " * 12})
                            + "\n" for i in range(4)) + "[1, 2]\n{broken\n")
    general = tmp_path / "general.jsonl"
    general.write_text(json.dumps({"messages": msgs("user")}) + "\n" + json.dumps({"text": "no messages"}) + "\n")
    args = ["longsft", "--quiet", "--set", f"tokenizer={tok_dir}", "--set", "long_count=2",
            "--set", "length_range=[50,400]"]
    code, out, err = run_cli(capsys, *args, "--set", f"inputs=[{docs}]", "--set", f"general=[{general}]",
                             "--set", f"out_dir={tmp_path / 'a'}")
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert "[longsft] read 6 documents, kept 4, rejected 2" in lines[-2], out
    assert "[longsft general] read 2 records, kept 1, rejected 1 (malformed 1)" in lines[-1], out
    rej = [json.loads(l) for l in (tmp_path / "a" / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r["line"]) for r in rej] == [("docs.jsonl", 5), ("docs.jsonl", 6),
                                                                ("general.jsonl", 2)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1]\n{broken\n")
    code, _, err = run_cli(capsys, *args, "--set", f"inputs=[{bad}]", "--set", f"out_dir={tmp_path / 'b'}")
    assert code == 5 and err.count("\n") == 1 and "all 2 documents" in err and "bad.jsonl:1" in err, err


def test_a_skipped_rerun_names_the_settings_it_ignored(tmp_path):
    """A finished stage rerun with other settings (more steps, another lr) is skipped, and the line
    says which keys of the saved config.json differ, so a changed setting is not silently ignored."""
    import dataclasses
    import json as _json

    from lmforge.cli.common import _changed_since

    @dataclasses.dataclass
    class Optim:
        lr: float = 3e-3

    @dataclasses.dataclass
    class Cfg:
        out_dir: str = ""
        steps: int = 48
        optim: Optim = dataclasses.field(default_factory=Optim)

    out = tmp_path / "run"
    out.mkdir()
    assert _changed_since(str(out), Cfg(str(out))) == ""            # no config.json: nothing to compare
    (out / "config.json").write_text(_json.dumps({"out_dir": str(out), "steps": 48, "optim": {"lr": 3e-3}}))
    assert _changed_since(str(out), Cfg(str(out))) == ""
    line = _changed_since(str(out), Cfg(str(out), steps=96, optim=Optim(1e-3)))
    assert "at steps (48 -> 96), optim.lr (0.003 -> 0.001), and was not used" in line and "delete DONE.json" in line
