"""CUDA paths of the trainer and the evaluation: precisions, GPU checkpoints read on the CPU, exact resume, evaluation.

CI has no GPU, so every test here is skipped there. On a CUDA machine: `pytest tests/test_cuda.py`.
"""
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hjepa import runs as R  # noqa: E402
from hjepa import train as T  # noqa: E402
from _helpers import micro  # noqa: E402
from hjepa.config import get_config  # noqa: E402
from hjepa.eval import evaluate  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cfg(out, *ov):
    return micro(out, "train.device=cuda", "train.log_every=1", *ov)


def test_precisions_train_and_agree(tmp_path):
    first = {}
    for p in ("fp32", "bf16", "fp16"):
        run = T.train(cfg(tmp_path / p, f"train.precision={p}", "train.max_steps=8"))
        env = json.loads((run / "env.json").read_text())
        assert env["device"]["type"] == "cuda" and env["device"]["name"], env["device"]
        losses = [r["loss"] for r in R.read_metrics(run, "train")]
        assert len(losses) == 8 and all(math.isfinite(x) for x in losses), (p, losses)
        first[p] = losses[0]
        ck = R.read_checkpoint(run / "checkpoints" / "final.pt")  # written from the GPU, read on the CPU
        assert all(v.device.type == "cpu" for v in ck["model"].values())
    for p in ("bf16", "fp16"):  # same init, data and masks: the first loss differs only by rounding
        assert abs(first[p] - first["fp32"]) < 0.05 * abs(first["fp32"]), first


def test_resume_on_cuda_continues_the_same_run(tmp_path):
    ov = ["train.max_steps=6", "train.ckpt_every=3", "train.keep_last=3", "train.precision=bf16"]
    ref = T.train(cfg(tmp_path / "ref", *ov))
    run = tmp_path / "run"
    shutil.copytree(ref, run)  # the same run, cut back to its step-3 checkpoint
    (run / "checkpoints" / "final.pt").unlink()
    for p in R.list_checkpoints(run / "checkpoints"):
        if p.name != "step_00000003.pt": p.unlink()
    T.train(cfg(run, *ov, "train.resume=auto"))
    assert [r["step"] for r in R.read_metrics(run, "train")] == [1, 2, 3, 4, 5, 6]
    a, b = (R.read_checkpoint(r / "checkpoints" / "final.pt")["model"] for r in (ref, run))
    for k in a:  # CUDA kernels (atomics in backward) need not be bit-reproducible: equal up to rounding
        torch.testing.assert_close(a[k], b[k], atol=2e-3, rtol=1e-2, msg=k)


def test_evaluate_on_cuda_matches_cpu(tmp_path):
    run = T.train(cfg(tmp_path / "r", "train.max_steps=2"))
    ck = run / "checkpoints" / "final.pt"
    g, c = (evaluate(ck, device=d, overrides=["eval.cache=false"]) for d in ("cuda", "cpu"))
    n = get_config("micro").data.n_test
    for k in ("knn_top1", "probe_test"):  # features differ by float rounding only: at most one test image flips
        assert abs(g[k] - c[k]) <= 1 / n + 1e-9, (k, g[k], c[k])
    assert abs(g["random_init"]["knn_top1"] - c["random_init"]["knn_top1"]) <= 1 / n + 1e-9
