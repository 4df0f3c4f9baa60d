"""Fuzzing the config and the masker (issue 33): 1,000 random configurations, each with a few fields set to valid,
boundary or broken values (NaN, inf, wrong types, empty lists, out-of-range numbers). Every one must either build
and sample a batch of valid masks, or raise a `ConfigError`/`ValueError` whose message names a config field; any other
exception (TypeError, IndexError, a hang) is a bug this test exists to find."""
import math
import random
import re
import typing
from dataclasses import fields

import pytest
import torch

from hjepa.config import SECTIONS, ConfigError, get_config
from hjepa.masks import build_masker

torch.set_num_threads(1)
SEED, N = 0, 1000
# what the masker sees; the other sections are fuzzed too (validation must hold there), but lightly
FOCUS = {"mask", "data", "model"}
BROKEN = [float("nan"), float("inf"), -float("inf"), -1, 0, "x", None, [], [1, 2, 3], True, 1e9, 0.5]


def _scalar(r: random.Random, tp, md):
    "A valid value of a scalar field (within its range) or, one time in three, a broken one."
    if r.random() < 1 / 3: return r.choice(BROKEN)
    if typing.get_origin(tp) is typing.Literal: return r.choice(typing.get_args(tp))
    if tp is bool: return r.random() < 0.5
    lo, hi = md.get("lo"), md.get("hi")
    lo = 0 if lo is None else lo
    hi = (lo + 8 if tp is int else lo + 2.0) if hi is None else hi
    if tp is int: return r.randint(int(lo), int(min(hi, lo + 64)))
    if tp is float: return r.choice([lo, hi, r.uniform(lo, hi)])
    return r.choice(["a", ""])


def _value(r: random.Random, tp, md):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return None if r.random() < 0.3 else _value(r, [a for a in args if a is not type(None)][0], md)
    if origin is tuple: return [_scalar(r, a, md) for a in args] if r.random() < 0.9 else [_scalar(r, args[0], md)]
    if origin is list: return [_scalar(r, args[0], md) for _ in range(r.randint(0, 4))]
    return _scalar(r, tp, md)


def _fields():
    out = []
    for sec, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        out += [(sec, f.name, hints[f.name], f.metadata) for f in fields(cls)
                if not (sec == "train" and f.name in ("out_dir", "resume", "device"))]
    return out


FIELDS = _fields()
FIELD_NAMES = {f"{s}.{n}" for s, n, _, _ in FIELDS}


def _random_overrides(r: random.Random) -> dict:
    pool = [f for f in FIELDS if f[0] in FOCUS] if r.random() < 0.8 else FIELDS
    return {f"{s}.{n}": _value(r, tp, md) for s, n, tp, md in r.sample(pool, r.randint(1, 5))}


def _names_a_field(msg: str) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(f)}\b", msg) for f in FIELD_NAMES)


def _check_masks(m, cfg):
    g = cfg.data.image_size // cfg.model.patch_size
    assert m.context.dtype == torch.int64 and m.context.shape[0] == 4
    assert 0 <= int(m.context.min()) and int(m.context.max()) < g * g
    assert len(m.targets) == cfg.model.n_levels
    for l, t in enumerate(m.targets):
        n = (g // 2 ** l) ** 2
        assert t.shape[0] == 4 and t.numel() > 0 and 0 <= int(t.min()) and int(t.max()) < n


def test_fuzz_config_and_masker():
    r = random.Random(SEED)
    outcome = {"ran": 0, "refused": 0}
    for i in range(N):
        ov = _random_overrides(r)
        try:
            cfg = get_config("micro", ov)
        except ConfigError as e:
            assert _names_a_field(str(e)), f"case {i} {ov}: the error names no field: {e}"
            outcome["refused"] += 1
            continue
        except Exception as e:  # noqa: BLE001 - anything else is a bug
            pytest.fail(f"case {i} {ov}: {type(e).__name__}: {e}")
        try:
            masker = build_masker(cfg)
            _check_masks(masker(4, torch.Generator().manual_seed(i)), cfg)
        except ValueError as e:  # ConfigError included: a masker may refuse what only it can judge, by name
            assert _names_a_field(str(e)) or "mask" in str(e), f"case {i} {ov}: the error names no field: {e}"
            outcome["refused"] += 1
            continue
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"case {i} {ov}: {type(e).__name__}: {e}")
        outcome["ran"] += 1
    # both outcomes are exercised in earnest, or the fuzzing says nothing
    assert outcome["ran"] > 100 and outcome["refused"] > 100, outcome


@pytest.mark.parametrize("ov", [{"optim.lr": math.nan}, {"optim.lr": math.inf}, {"optim.weight_decay": math.nan},
                                {"mask.target_aspect": [math.nan, 1.0]}, {"optim.betas": [1, 1]},
                                {"mask.n_targets": []}, {"mask.n_targets": 2.0}, {"eval.probe_grid": []}])
def test_issue_33_configs_are_refused_by_name(ov):
    (key, _), = ov.items()
    with pytest.raises(ConfigError, match=re.escape(key)):
        get_config("micro", ov)
