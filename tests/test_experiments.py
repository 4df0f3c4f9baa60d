"""The experiment notebooks execute under papermill with tiny parameters; sweeps; one-paragraph errors."""
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from hjepa.experiments import run_notebook, run_sweep

ROOT = Path(__file__).resolve().parents[1]
PAPERMILL = [sys.executable, "-m", "papermill", "--no-progress-bar"]
TINY = dict(max_steps=6, epochs=1)


def outputs(nb_path, kind):
    nb = nbformat.read(nb_path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if kind in o.get("data", {})]


def stream_text(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


def test_train_notebook_report(tmp_path):
    res = run_notebook("train", tmp_path, dict(TINY, out_dir=str(tmp_path)))
    assert res["status"] == "ok", res["error"]
    assert len(outputs(res["executed"], "image/png")) >= 4  # masks, run plots, spectrum, evaluation
    m = json.loads((tmp_path / "metrics.json").read_text())
    for k in ("final", "collapse", "eval", "random_init", "pixels", "images_per_s", "wall_time_s", "steps"):
        assert k in m, k
    assert set(m["eval"]) >= {"knn_top1", "probe_test"} and 0 <= m["eval"]["probe_test"] <= 1
    assert m["steps"] == 6 and "loss" in m["final"]
    assert Path(res["html"]).read_text().count("<img") >= 4


def test_evaluate_notebook_on_a_checkpoint(tmp_path):
    res = run_notebook("evaluate", tmp_path, dict(out=str(tmp_path / "eval.json")))  # trains a micro model first
    assert res["status"] == "ok", res["error"]
    assert outputs(res["executed"], "image/png")
    assert "knn_top1" in json.loads((tmp_path / "eval.json").read_text())


def test_explorer_notebooks_execute(tmp_path):
    for name, params in [("explore_masks", dict(grid=8, n_stats=32)), ("explore_collapse", dict(steps=4))]:
        res = run_notebook(name, tmp_path / name, params, html=False)
        assert res["status"] == "ok", (name, res["error"])
        nb = nbformat.read(res["executed"], as_version=4)
        kinds = {k for c in nb.cells for o in c.get("outputs", []) for k in o.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" in kinds, (name, kinds)


def test_sweep_two_points(tmp_path):
    spec = dict(name="s", notebook="train", fixed=dict(TINY, preset="micro"), grid=dict(seed=[0, 1]))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    out = subprocess.run([sys.executable, "-m", "hjepa.experiments", "sweep", str(tmp_path / "sweep.yaml"),
                          "--root", str(tmp_path), "--no-html"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    import pandas as pd
    df = pd.read_csv(tmp_path / "s" / "summary.csv")
    assert list(df["run"]) == ["seed=0", "seed=1"] and (df["status"] == "ok").all()
    assert "eval.probe_test" in df.columns and (tmp_path / "s" / "compare.png").stat().st_size > 1000
    # re-running skips finished runs; a failing run is recorded and does not stop the others
    spec["grid"]["seed"] = [0, 1]
    spec["list"] = [dict(name="bad", preset="nope"), dict(name="seed=0", seed=0)]
    del spec["grid"]
    sdir = run_sweep(spec, root=tmp_path, html=False)
    df = pd.read_csv(sdir / "summary.csv").set_index("run")
    assert df.loc["seed=0", "status"] == "ok (cached)"
    assert df.loc["bad", "status"] == "failed" and "unknown preset 'nope'" in df.loc["bad", "error"]
    # a run that began training and never finished (no metrics.json) is set aside whole and run again
    (sdir / "seed=0" / "metrics.json").unlink()
    sdir = run_sweep(dict(spec, list=[dict(name="seed=0", seed=0)]), root=tmp_path, html=False)
    assert pd.read_csv(sdir / "summary.csv").set_index("run").loc["seed=0", "status"] == "ok"
    assert (sdir / "seed=0" / "metrics.json").exists()
    aside = sdir / "seed=0.unfinished-1"
    assert (aside / "config.yaml").exists() and not (aside / "metrics.json").exists()


@pytest.mark.parametrize("params, message", [
    (["-p", "preset", "tiyn"], "unknown preset 'tiyn'; did you mean 'tiny'"),
    (["-p", "dataset", "imagefolder", "-p", "data_dir", "/no/such/dir"], "data.data_dir='/no/such/dir' does not exist"),
    (["-y", "overrides: [model.dpeth=3]"], "unknown key 'model.dpeth'; did you mean 'depth'"),
])
def test_errors_exit_nonzero_with_one_paragraph(tmp_path, params, message):
    out_nb = tmp_path / "out.ipynb"
    r = subprocess.run(PAPERMILL + [str(ROOT / "nbs/experiments/train.ipynb"), str(out_nb)] + params,
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and message in r.stderr
    nb = nbformat.read(out_nb, as_version=4)
    errs = [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert len(errs) == 1 and message in errs[0]["evalue"]
    assert errs[0]["ename"] == "ExperimentError" and len(errs[0]["traceback"]) == 1  # one paragraph, no traceback


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "nbs/experiments").glob("*.ipynb")))
def test_parameters_are_typed_commented_and_parsed(name):
    "papermill sees every assignment of a parameters cell, with its type and comment (it skips a line with a second '=')."
    import ast
    import papermill as pm
    path = ROOT / "nbs/experiments" / name
    cells = [c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    if not cells: pytest.skip(f"{name} has no parameters cell")
    assigned = [n.target.id for n in ast.parse(cells[0].source).body if isinstance(n, ast.AnnAssign)]
    untyped = [n for n in ast.parse(cells[0].source).body if isinstance(n, ast.Assign)]
    seen = pm.inspect_notebook(str(path))
    assert not untyped and assigned and list(seen) == assigned, (assigned, list(seen))
    assert all(p["inferred_type_name"] != "None" and p["help"] for p in seen.values()), seen


def test_evaluate_rejects_a_missing_checkpoint(tmp_path):
    r = subprocess.run(PAPERMILL + [str(ROOT / "nbs/experiments/evaluate.ipynb"), str(tmp_path / "o.ipynb"),
                                    "-p", "checkpoint", "/no/such.pt"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "checkpoint /no/such.pt does not exist" in r.stderr


def test_results_report_runs_and_refuses_mixed_budgets(tmp_path):
    "The results report end to end at a few steps per run: runs, table, plots, targets, records; mixed budgets are refused."
    nb, root = ROOT / "nbs/experiments/results.ipynb", tmp_path / "runs"
    rec_csv = tmp_path / "nbs/experiments/results_runs.csv"  # the default records path, cwd-relative
    args = ["-p", "threads", "1", "-y", "seeds: [0]", "-y", "datasets: [digits]", "-y", "variants: [ijepa, hjepa]"]

    def report(name, *params, root=root):
        return subprocess.run(PAPERMILL + [str(nb), str(tmp_path / name), "-p", "root", str(root), *args, *params],  # later -y wins
                              capture_output=True, text=True, cwd=tmp_path)

    steps = ["-p", "budget_steps", "4", "-p", "warmup_steps", "2"]
    r = report("a.ipynb", *steps)
    assert r.returncode == 0, r.stderr[-3000:]
    for v in ("ijepa", "hjepa"):
        assert (root / "digits" / f"{v}-s0" / "metrics.json").exists()
        assert [x["step"] for x in map(json.loads, (root / "digits" / f"{v}-s0" / "metrics.jsonl").read_text().splitlines())
                if x.get("kind") == "event"][-1] == 4                        # a step budget: exactly that many steps
    out = nbformat.read(tmp_path / "a.ipynb", as_version=4)
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for c in out.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "hjepa ≥ ijepa at equal budget" in text and "No silent collapse" in text and "4 steps of pre-training" in text
    assert len(outputs(tmp_path / "a.ipynb", "image/png")) >= 3  # accuracy bars, loss vs accuracy, accuracy vs steps
    # the finished runs are recorded; without their run directories a report reuses the records
    rec = pd.read_csv(rec_csv)
    assert sorted(rec.variant) == ["hjepa", "ijepa"] and (rec.budget == "4 steps").all() and rec.probe.between(0, 1).all()
    assert (rec.gflops > 0).all() and (rec.steps == 4).all()
    for r in rec.itertuples():  # the speed recorded is the one the trainer measured into the run's env.json
        assert r.gflops == json.loads((root / "digits" / f"{r.variant}-s0" / "env.json").read_text())["device"]["cpu_gflops"]
    # a run re-read from its directory takes its env.json speed; one whose env.json has none keeps its record's
    env_f = root / "digits/hjepa-s0/env.json"
    env = json.loads(env_f.read_text()); del env["device"]["cpu_gflops"]; env_f.write_text(json.dumps(env))
    rec.assign(gflops=1.0).to_csv(rec_csv, index=False)
    r = report("g.ipynb", *steps)
    assert r.returncode == 0 and "0 runs swept" in stream_text(tmp_path / "g.ipynb"), r.stderr[-3000:]
    g = pd.read_csv(rec_csv).set_index("variant").gflops
    assert g["hjepa"] == 1.0 and g["ijepa"] == json.loads((root / "digits/ijepa-s0/env.json").read_text())["device"]["cpu_gflops"]
    # a recorded run made again on another device (the replication records) is shown next to its record
    rec.iloc[:1].assign(device="other-device", knn=0.123).to_csv(tmp_path / "nbs/experiments/results_replication.csv", index=False)
    r = report("r.ipynb", *steps, root=tmp_path / "elsewhere")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "elsewhere").exists()                   # nothing was trained again
    rep = [t for o in outputs(tmp_path / "r.ipynb", "text/plain") if "other-device" in (t := str(o["data"]["text/plain"]))]
    assert len(rep) == 1 and f"digits/{rec.variant.iloc[0]}-s0" in rep[0], rep   # one table, naming the run
    lines = rep[0].splitlines()
    assert any("replication" in l and "other-device" in l and "12.3" in l for l in lines), rep[0]  # its own kNN
    assert any("replication" in l and l.split()[-1] == "True" for l in lines), rep[0]  # same init as the record
    assert "no run of this page's configs in the replication records" in stream_text(tmp_path / "a.ipynb")
    assert "0 runs swept" in stream_text(tmp_path / "r.ipynb")
    # a diagnostic variant is shown from its record only (at the report's config), never trained by the report
    r = report("x.ipynb", *steps, "-y", "variants: [hjepa+cut-all]", root=tmp_path / "diag")
    assert r.returncode == 0, r.stderr[-3000:]
    r = report("y.ipynb", *steps, "-y", "diagnostics: [hjepa+cut-all, hjepa+separate]", root=tmp_path / "elsewhere")
    assert r.returncode == 0 and not (tmp_path / "elsewhere").exists(), r.stderr[-3000:]
    y = nbformat.read(tmp_path / "y.ipynb", as_version=4)
    md = "\n".join(str(o.get("data", {}).get("text/markdown", "")) for c in y.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "`hjepa+cut-all` digits 1 of 1 seeds; `hjepa+separate` none recorded" in md
    # records are matched by config, not by name: hjepa's rows renamed still serve hjepa, and are not written again
    rec = pd.read_csv(rec_csv)
    rec.assign(variant=rec.variant.replace({"hjepa": "hjepa-old-name"})).to_csv(rec_csv, index=False)
    r = report("v.ipynb", *steps, root=tmp_path / "elsewhere")
    assert r.returncode == 0 and not (tmp_path / "elsewhere").exists(), r.stderr[-3000:]
    assert "0 runs swept" in stream_text(tmp_path / "v.ipynb")
    assert sorted(pd.read_csv(rec_csv).variant) == sorted(rec.variant.replace({"hjepa": "hjepa-old-name"}))
    rec.to_csv(rec_csv, index=False)
    # a report from the records only: a variant without a record is listed as left out, not trained
    r = report("n.ipynb", *steps, "-p", "train_missing", "False", "-y", "variants: [ijepa, hjepa, hjepa+vicreg]",
               root=tmp_path / "elsewhere")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "elsewhere").exists()
    assert "left out (train_missing=False; neither recorded nor finished" in stream_text(tmp_path / "n.ipynb")
    assert "hjepa+vicreg-s0" in stream_text(tmp_path / "n.ipynb") and "0 runs swept" in stream_text(tmp_path / "n.ipynb")
    # a changed variant definition (here: the warm-up) makes its record stale: that run is trained again
    r = report("w.ipynb", "-p", "budget_steps", "4", "-p", "warmup_steps", "3", "-y", "variants: [ijepa]", root=tmp_path / "elsewhere")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "elsewhere/digits/ijepa-s0/metrics.json").exists()
    assert len(pd.read_csv(rec_csv)) == 4                          # both parameter sets are kept (and the diagnostic)
    # the same root with another budget: the finished runs would be averaged in silently, so the report refuses
    r = report("b.ipynb", "-p", "budget_steps", "5", "-p", "warmup_steps", "2")
    assert r.returncode != 0 and "trained with another budget: digits/ijepa-s0 (4 steps)" in r.stderr
    # the same root and budget after a default changed (here the warm-up, standing in for a preset): refused, nothing moved
    r = report("s.ipynb", "-p", "budget_steps", "4", "-p", "warmup_steps", "1")
    assert r.returncode != 0 and "another config (a variant, preset or default has changed since): digits/ijepa-s0" in r.stderr
    assert (root / "digits/ijepa-s0/metrics.json").exists()
    r = report("c.ipynb", "-p", "epochs", "2", "-p", "budget_steps", "100", root=tmp_path / "c")
    assert r.returncode != 0 and "warmup_steps=50 exceeds the 40 planned steps of digits" in r.stderr
    r = report("d.ipynb", "-p", "budget_minutes", "0.05")        # budget_steps keeps its default: two budgets
    assert r.returncode != 0 and "set exactly one of them above 0" in r.stderr
    r = report("e.ipynb", *steps, "-p", "gflops", "-1")
    assert r.returncode != 0 and "gflops=-1: must be above 0, or 0 to measure" in r.stderr
    # a wall-clock record is reused only on a machine of the same speed: halve the recorded speed and it trains again
    wall = ["-p", "budget_steps", "0", "-p", "budget_minutes", "0.02", "-y", "variants: [ijepa]"]
    r = report("m.ipynb", *wall, root=tmp_path / "m1")
    assert r.returncode == 0, r.stderr[-3000:]
    rec = pd.read_csv(rec_csv)  # two measurements of a shared machine differ: pin the speed of the record and of the report
    rec.loc[rec.budget == "0.02 min", "gflops"] = 40.0
    rec.to_csv(rec_csv, index=False)
    r = report("m2.ipynb", *wall, "-p", "gflops", "44", root=tmp_path / "m2")
    assert r.returncode == 0 and not (tmp_path / "m2").exists(), r.stderr[-3000:]    # within 20 %: the same machine, reused
    r = report("m3.ipynb", *wall, "-p", "gflops", "80", root=tmp_path / "m3")
    assert r.returncode == 0 and (tmp_path / "m3/digits/ijepa-s0/metrics.json").exists(), r.stderr[-3000:]
