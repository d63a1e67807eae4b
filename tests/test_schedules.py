import math

import pytest

from lmforge.config import ConfigError, from_dict
from lmforge.train.schedules import ScheduleConfig, lr_at

PEAK = 5e-4


def sched(**kw):
    return from_dict(ScheduleConfig, kw)


def test_constant_with_warmup():
    s = sched(kind="constant", warmup_steps=4)
    assert [lr_at(s, i, 100, PEAK) for i in range(5)] == pytest.approx([PEAK / 4, PEAK / 2, 3 * PEAK / 4, PEAK, PEAK])
    assert lr_at(s, 99, 100, PEAK) == PEAK


def test_cosine_formula():
    s = sched(kind="cosine", warmup_steps=10, min_ratio=0.1)
    total = 110
    for step in (10, 35, 60, 85, 109):
        t = (step - 10) / (total - 10 - 1)
        want = PEAK * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))
        assert lr_at(s, step, total, PEAK) == pytest.approx(want)
    assert lr_at(s, 109, total, PEAK) == pytest.approx(0.1 * PEAK)


def test_linear_formula():
    s = sched(kind="linear", min_ratio=0.0)
    assert lr_at(s, 0, 11, PEAK) == pytest.approx(PEAK)
    assert lr_at(s, 5, 11, PEAK) == pytest.approx(PEAK / 2)
    assert lr_at(s, 10, 11, PEAK) == pytest.approx(0.0)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_index_schedule(shape):
    # Index-1.9B: warmup 100, stable at 5e-4, decay to 1% (5e-6).
    s = sched(kind="wsd", warmup_steps=100, decay_fraction=0.2, decay_shape=shape, min_ratio=0.01)
    total = 1000
    assert lr_at(s, 49, total, PEAK) == pytest.approx(PEAK * 50 / 100)
    assert lr_at(s, 100, total, PEAK) == PEAK
    assert lr_at(s, 799, total, PEAK) == PEAK          # last stable step
    assert lr_at(s, 999, total, PEAK) == pytest.approx(5e-6)
    t = (900 - 800 + 1) / 200
    want = {"linear": 1 - 0.99 * t, "cosine": 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)),
            "1-sqrt": 1 - 0.99 * math.sqrt(t)}[shape]
    assert lr_at(s, 900, total, PEAK) == pytest.approx(PEAK * want)
    lrs = [lr_at(s, i, total, PEAK) for i in range(800, 1000)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_multistage_skywork():
    # Skywork: cosine 6e-4 -> 6e-5, then constant 6e-5.
    s = sched(kind="multistage", stages=[{"kind": "cosine", "steps": 100, "lr": 6e-4, "min_ratio": 0.1},
                                         {"kind": "constant", "steps": 50, "lr": 6e-5}])
    assert s.total_steps(1) == 150
    assert lr_at(s, 0, 150, PEAK) == pytest.approx(6e-4)
    assert lr_at(s, 99, 150, PEAK) == pytest.approx(6e-5)
    assert lr_at(s, 100, 150, PEAK) == pytest.approx(6e-5)
    assert lr_at(s, 149, 150, PEAK) == pytest.approx(6e-5)


def test_bad_schedules_refused():
    with pytest.raises(ConfigError, match="stages"):
        sched(kind="multistage")
    with pytest.raises(ConfigError, match=r"stages\[0\].steps"):
        sched(kind="multistage", stages=[{"kind": "cosine"}])
    with pytest.raises(ConfigError, match="min_ratio"):
        sched(min_ratio=2.0)
    with pytest.raises(ConfigError, match="decay_shape"):
        sched(kind="wsd", decay_shape="exp")
