"""scripts/findings_table.py: the README's findings table from a run. A run folder that is
missing or holds no finished finding is one line and exit 2 (it was a traceback, or an empty
table that --readme wrote over README's)."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "findings_table.py"
README = "intro\n<!-- findings-table:begin -->\n| old table |\n<!-- findings-table:end -->\nrest\n"


def script():
    spec = importlib.util.spec_from_file_location("findings_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_missing_run_folder_is_one_line(tmp_path, capsys):
    assert script().main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run folder not found" in err


def test_run_without_findings_leaves_readme_alone(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    (run / "pretrain" / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert script().main([str(run), "--readme", str(readme)]) == 2
    assert "no finished finding" in capsys.readouterr().err
    assert readme.read_text() == README


def test_a_finding_fills_the_table(tmp_path):
    stage = tmp_path / "run" / "zloss"
    stage.mkdir(parents=True)
    (stage / "result.json").write_text(json.dumps({
        "finding": "zloss", "source": "StableLM 2 1.6B technical report", "claim": "z-loss neither helps nor hurts",
        "comparisons": {"z-loss": {"baseline": "off", "expect": "equal", "tolerance": 0.02, "diff": 0.01,
                                   "se": 0.02, "verdict": "inconclusive", "n": 3}}}))
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert script().main([str(tmp_path / "run"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| old table |" not in text and "| zloss | StableLM 2 1.6B technical report |" in text
    assert "**inconclusive** | 3 |" in text
