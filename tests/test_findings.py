"""The findings suite: the verdict rule, the plan guard, and one finding run end to end on
a toy token set (a few steps per arm: the machinery, not the claim)."""
import json

import pytest

from lmforge import config
from lmforge.config import ConfigError
from lmforge.findings import catalog
from lmforge.findings.stage import FindingsConfig, run
from lmforge.findings.verdict import compare, rule

TOY = ["steps=4"]


@pytest.mark.parametrize("expect,diff,se,hib,want", [
    ("better", -0.10, 0.02, False, "agrees"),        # lower loss, beyond 2 SE
    ("better", -0.03, 0.02, False, "inconclusive"),  # inside 2 SE
    ("better", 0.10, 0.02, False, "disagrees"),      # higher loss, beyond 2 SE
    ("better", 0.10, 0.02, True, "agrees"),          # higher accuracy
    ("worse", 0.10, 0.02, False, "agrees"),
    ("equal", 0.01, 0.004, False, "agrees"),         # 0.01 + 0.008 <= 0.02
    ("equal", 0.01, 0.008, False, "inconclusive"),   # 0.01 + 0.016 > 0.02 but 0.01 - 0.016 < 0.02
    ("equal", 0.10, 0.01, False, "disagrees"),       # 0.10 - 0.02 > 0.02
])
def test_rule(expect, diff, se, hib, want):
    assert rule(expect, diff, se, hib, tolerance=0.02) == want


def test_compare_is_paired_by_seed():
    base = {0: 5.0, 1: 6.0, 2: 7.0}            # large spread between seeds ...
    var = {0: 4.9, 1: 5.91, 2: 6.89}           # ... a steady 0.1 gain within each seed
    c = compare(base, var, "better", higher_is_better=False)
    assert c["n"] == 3 and c["diff"] == pytest.approx(-0.1, abs=1e-9)
    assert c["stderr"] < 0.01 and c["verdict"] == "agrees"
    assert compare({0: 1.0}, {0: 0.5}, "better", False)["verdict"] == "too few seeds"


def test_catalog_declares_every_listed_finding():
    for name in catalog.available():
        f = catalog.get(name)
        assert f.name == name and f.claim and f.expect and f.baseline not in f.expect
    with pytest.raises(ConfigError, match="unknown finding"):
        config.load(FindingsConfig, None, ["name=nope"])


def test_zloss_end_to_end_and_resume(token_data, tmp_path, monkeypatch):
    out = tmp_path / "zl"
    cfg = config.load(FindingsConfig, None, ["name=zloss", f"data={token_data}", f"out_dir={out}",
                                             "seeds=[0,1]", *TOY])
    monkeypatch.setitem(__import__("lmforge.findings.context", fromlist=["SCALES"]).SCALES, "toy",
                        _tiny_scale())
    summary = run(cfg, progress=False)
    assert summary["finding"] == "zloss" and set(summary["verdicts"]) == {"z-loss"}
    result = json.loads((out / "result.json").read_text())
    assert result["arms"]["off"]["val_loss"]["n"] == 2 and (out / "finding.png").stat().st_size > 5000
    assert result["claim"].startswith("z-loss") and result["expect"] == {"z-loss": "equal"}
    assert not list(out.glob("work/*/*/checkpoints/step-*"))     # weights dropped once recorded
    # a rerun skips; a changed plan after results is refused without a reason, kept with one
    assert run(cfg, progress=False)["skipped"]
    (out / "DONE.json").unlink()
    changed = config.load(FindingsConfig, None, ["name=zloss", f"data={token_data}", f"out_dir={out}",
                                                 "seeds=[0,1,2]", *TOY])
    with pytest.raises(ConfigError, match="plan changed"):
        run(changed, progress=False)
    amended = config.load(FindingsConfig, None, ["name=zloss", f"data={token_data}", f"out_dir={out}",
                                                 "seeds=[0,1,2]", "amend=a third seed", *TOY])
    summary = run(amended, progress=False)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["amendments"][0]["reason"] == "a third seed" and plan["amendments"][0]["changed"] == ["seeds"]
    assert json.loads((out / "result.json").read_text())["arms"]["off"]["val_loss"]["n"] == 3


def _tiny_scale():
    from lmforge.findings.context import Scale
    return Scale("toy", dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2), seq_len=32, micro_batch_size=2,
                 steps=4, lr=3e-3, device="cpu", eval_batches=2)


# ropebase (6 arms, 3 of them long stages) is the costliest: in the nightly slow run; longfails
# exercises the same long-stage helpers (catalog/longrun.py) in the default run
@pytest.mark.parametrize("name", [pytest.param("ropebase", marks=pytest.mark.slow), "longfails", "growth"])
def test_stage_built_findings_end_to_end(name, token_data, tmp_path, monkeypatch):
    """Findings whose arms chain stages (a shared base model per seed, then longctx or grow and
    continued training): every arm x seed recorded with the primary metric, a verdict per
    variant, the shared base's weights dropped after the last arm."""
    out = tmp_path / name
    cfg = config.load(FindingsConfig, None, [f"name={name}", f"data={token_data}", f"out_dir={out}",
                                             "seeds=[0,1]", *TOY])
    monkeypatch.setitem(__import__("lmforge.findings.context", fromlist=["SCALES"]).SCALES, "toy",
                        _tiny_scale())
    monkeypatch.setattr("lmforge.findings.catalog.longrun.MAX_SEQS", 2)   # held-out sequences per length
    summary = run(cfg, progress=False)
    finding = catalog.get(name)
    assert set(summary["verdicts"]) == set(finding.expect)
    result = json.loads((out / "result.json").read_text())
    for arm in finding.arms:
        st = result["arms"][arm][finding.key]
        assert st["n"] == 2 and all(v == v and 0 < v < 20 for v in st["values"])   # finite losses
    assert all(c["verdict"] in ("agrees", "disagrees", "inconclusive") for c in result["comparisons"].values())
    assert (out / "finding.png").stat().st_size > 5000
    assert (out / "work" / "base" / "seed1" / "DONE.json").exists()
    assert not list(out.glob("work/**/checkpoints/step-*"))     # every arm's weights dropped once recorded
