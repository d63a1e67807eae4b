from dataclasses import dataclass, field
from typing import Literal

import pytest

from lmforge import config
from lmforge.config import ConfigError, check


@dataclass
class Inner:
    lr: float = 1e-3
    kind: Literal["a", "b"] = "a"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])

    def __post_init__(self):
        check(self.lr > 0, "lr", "must be > 0")


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    flag: bool = False
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)
    weights: dict[str, float] = field(default_factory=dict)


def test_load_yaml_with_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: run\nsteps: 5\ninner:\n  lr: 5e-4\n  kind: b\nweights: {web: 1, code: 0.5}\n")
    cfg = config.load(Outer, p, ["inner.lr=3e-4", "flag=true", "maybe=7"])
    assert cfg.name == "run" and cfg.steps == 5 and cfg.flag is True and cfg.maybe == 7
    assert cfg.inner.lr == pytest.approx(3e-4) and cfg.inner.kind == "b"
    assert cfg.weights == {"web": 1.0, "code": 0.5}
    assert config.to_dict(cfg)["inner"]["betas"] == [0.9, 0.95]


@pytest.mark.parametrize("text,needle", [
    ("stepz: 3\n", "stepz: unknown key"),
    ("inner: {lrr: 1}\n", "inner.lrr: unknown key"),
    ("steps: many\n", "steps: expected an integer"),
    ("flag: 1\n", "flag: expected true/false"),
    ("inner: {kind: c}\n", "inner.kind: expected one of"),
    ("inner: {lr: -1}\n", "inner.lr: must be > 0"),
    ("inner: [1, 2]\n", "inner: expected a mapping"),
    ("steps: [1\n", "invalid YAML"),
])
def test_bad_config_names_file_and_key(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(Outer, p)
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg


def test_bad_override_refused():
    with pytest.raises(ConfigError, match="inner.nope: unknown key"):
        config.load(Outer, None, ["inner.nope=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.load(Outer, None, ["steps"])


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        config.load(Outer, "/nonexistent/x.yaml")
