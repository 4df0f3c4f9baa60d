"""The experiment notebooks execute under papermill with tiny parameters; sweeps; one-paragraph errors."""
import json
import os
import re
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
    assert m["steps"] == 6 and m["planned_steps"] == 6 and m["stopped"] == "finished: planned steps done" and "loss" in m["final"]
    html = Path(res["html"]).read_text()
    assert html.count("<img") >= 4
    # the report leads with its answer (right after the parameters), computed at the end; the config comes last, folded
    nb = nbformat.read(res["executed"], as_version=4)
    first = next(o for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])
                 and "injected-parameters" not in c.metadata.get("tags", []) for o in c.get("outputs", []))
    top = first["data"]["text/markdown"]
    assert "points over random init" in top and "6 of 6 planned optimizer steps (planned steps done)." in top, top
    assert f"{100 * m['random_init']['probe_test']:.1f} %" in top and "Collapse:" in top and "Wall time:" in top, top
    assert html.index("points over random init") < html.index("<img") < html.index("<details><summary><b>The resolved config")


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


RESULTS = ROOT / "nbs/experiments/results.ipynb"


def report_cell(ns: dict, text: str) -> dict:
    "Run the results report's code cell containing `text` in this process, in namespace `ns` (no kernel)."
    exec(next(c.source for c in nbformat.read(RESULTS, as_version=4).cells if c.cell_type == "code" and text in c.source), ns)
    return ns


def report_setup(**params) -> dict:
    "The results report's parameters cell, `params` over it, and its setup cell: the report's own functions, to check on records."
    ns = {}
    exec(next(c.source for c in nbformat.read(RESULTS, as_version=4).cells if "parameters" in c.metadata.get("tags", [])), ns)
    return report_cell(ns | params, "def load_runs(")


def test_results_report_runs_and_refuses_mixed_budgets(tmp_path):
    """The results report: two runs trained end to end at 4 steps (runs, table, plots, targets, records); every other check
    (records reused, matched by config and machine speed, replication, diagnostics, refusals) on records and those runs."""
    from hjepa.runs import append_records
    root, rec_csv = tmp_path / "runs", tmp_path / "nbs/experiments/results_runs.csv"  # the default records path, cwd-relative
    args = ["-p", "threads", "1", "-p", "curve_points", "2", "-y", "seeds: [0]", "-y", "datasets: [digits]",
            "-y", "variants: [ijepa, hjepa]", "-p", "budget_steps", "4", "-p", "warmup_steps", "2"]
    base = dict(threads=1, curve_points=2, seeds=[0], datasets=["digits"], variants=["ijepa", "hjepa"], budget_steps=4,
                warmup_steps=2, root=str(root), records=str(rec_csv), replication="", gflops=50.0)  # the same, in this process
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # the kernels import this checkout's hjepa, not an installed one

    def report(name, *params, root=root):
        return subprocess.run(PAPERMILL + [str(RESULTS), str(tmp_path / name), "-p", "root", str(root), *args, *params],
                              capture_output=True, text=True, cwd=tmp_path, env=env)  # later -p/-y win

    # the one report that trains: two runs of a 4-step budget
    r = report("a.ipynb")
    assert r.returncode == 0, r.stderr[-3000:]
    for v in ("ijepa", "hjepa"):
        assert (root / "digits" / f"{v}-s0" / "metrics.json").exists()
        assert [x["step"] for x in map(json.loads, (root / "digits" / f"{v}-s0" / "metrics.jsonl").read_text().splitlines())
                if x.get("kind") == "event"][-1] == 4                        # a step budget: exactly that many steps
    out = nbformat.read(tmp_path / "a.ipynb", as_version=4)
    text = "\n".join(str(o.get("data", {}).get("text/markdown", "")) + str(o.get("data", {}).get("text/plain", ""))
                     for c in out.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "### The answer" in text and "2 of the 2 planned" in text and "`hjepa` − `ijepa`:" in text  # the answer, computed
    assert "Collapse monitor on the recipes:" in text and "Spearman ρ (loss, probe)" in text and "4 steps of pre-training" in text
    assert "**Does the hierarchy pay (digits, 4 steps)?**" in text and "`hjepa` − `ijepa`" in text and "no verdict: fewer than 2 seeds" in text
    assert len(outputs(tmp_path / "a.ipynb", "image/png")) >= 3  # accuracy bars, loss vs accuracy, accuracy vs steps
    assert "no run of this page's configs in the replication records" in stream_text(tmp_path / "a.ipynb")
    # the finished runs are recorded, with the speed the trainer measured into the run's env.json
    rec = pd.read_csv(rec_csv)
    assert sorted(rec.variant) == ["hjepa", "ijepa"] and (rec.budget == "4 steps").all() and rec.probe.between(0, 1).all()
    assert (rec.gflops > 0).all() and (rec.steps == 4).all()
    for r in rec.itertuples():
        assert r.gflops == json.loads((root / "digits" / f"{r.variant}-s0" / "env.json").read_text())["device"]["cpu_gflops"]
    # the report's own functions, on these runs and records, in this process
    ns = report_setup(**base)
    assert set(ns["read_records"]()) == {("digits", "ijepa", 0), ("digits", "hjepa", 0)}
    # the hierarchy's bar: 2 points ahead with separate intervals, or the flat final probe within 60 % of the steps
    pays, S = ns["pays"], pd.Series
    assert pays(S([90.0, 91.0]), S([93.0, 94.0]), float("nan")).startswith("yes: ≥ 2 points")
    assert pays(S([90.0, 92.0]), S([92.5, 95.5]), float("nan")) == "no"                        # +3 points, intervals overlap
    assert pays(S([90.0, 91.0]), S([90.0, 91.0]), 2.0).startswith("yes: ≤ 60 %")              # at step 2 of 4
    assert pays(S([90.0, 91.0]), S([90.0, 91.0]), 3.0) == "no"                                 # at step 3 of 4: 75 %
    assert pays(S([90.0]), S([99.0]), 1.0).startswith("no verdict")                           # one seed
    assert pays(S([10.0, 11.0]), S([10.0, 11.0]), 2.0, floor=10.0) == "no"                   # the flat recipe learned nothing
    assert pays(S([90.0, 91.0]), S([90.0, 91.0]), 3.0, steps=8).startswith("yes: ≤ 60 %")     # another budget: step 3 of 8
    # another step budget is another config: the 4-step records are not read as 8-step ones, and vice versa
    assert ns["params_key"]("digits", "ijepa", 0, 8) != ns["params_key"]("digits", "ijepa", 0)
    assert ns["read_records"](steps=8) == {} and set(ns["read_records"](steps=4)) == set(ns["read_records"]())
    # a lane of LeJEPA alone (no masks, so no context to tabulate) gets an empty context table, not a crash
    lone = report_setup(**(base | dict(variants=["lejepa"], diagnostics=[]))) | dict(RC=pd.DataFrame(columns=["dataset", "variant", "gain"]))
    assert report_cell(lone, "ctx_rows = []")["CTX"].empty
    # a run re-read from its directory takes its env.json speed; one whose env.json has none keeps its record's
    env_f = root / "digits/hjepa-s0/env.json"
    e = json.loads(env_f.read_text()); del e["device"]["cpu_gflops"]; env_f.write_text(json.dumps(e))
    rec.assign(gflops=1.0).to_csv(rec_csv, index=False)
    ns["save_records"](ns["load_runs"](str(root)))
    g = pd.read_csv(rec_csv).set_index("variant").gflops
    assert g["hjepa"] == 1.0 and g["ijepa"] == json.loads((root / "digits/ijepa-s0/env.json").read_text())["device"]["cpu_gflops"]
    rec.to_csv(rec_csv, index=False)
    # a changed variant definition (here the warm-up, standing in for a preset or default) matches no record: trained again
    assert report_setup(**(base | dict(warmup_steps=3)))["read_records"]() == {}
    # ... and with those runs on disk the report refuses rather than averaging them in, and moves nothing
    with pytest.raises(ValueError, match="another config .a variant, preset or default has changed since.: digits/ijepa-s0"):
        report_cell(report_setup(**(base | dict(warmup_steps=1))), "done = load_runs(root, quiet=True, recorded=False)")
    assert (root / "digits/ijepa-s0/metrics.json").exists()
    # bad parameters are refused before anything runs
    with pytest.raises(ValueError, match="warmup_steps=50 exceeds the 40 planned steps of digits"):
        report_setup(**(base | dict(epochs=2, budget_steps=100, warmup_steps=50)))["run_params"]("digits", "ijepa", 0)
    with pytest.raises(ValueError, match="set exactly one of them above 0"):
        report_setup(**(base | dict(budget_minutes=0.05)))
    with pytest.raises(ValueError, match="gflops=-1: must be above 0, or 0 to measure"):
        report_setup(**(base | dict(gflops=-1)))
    # a wall-clock record is reused only on a machine within 20 % of its speed
    wall = base | dict(budget_steps=0, budget_minutes=0.02, variants=["ijepa"])
    key = ("digits", "ijepa", 0)
    append_records(rec_csv, rec[rec.variant == "ijepa"].assign(config=report_setup(**wall)["params_key"](*key),
                                                               budget="0.02 min", gflops=40.0))
    assert set(report_setup(**(wall | dict(gflops=44.0)))["read_records"]()) == {key}
    assert report_setup(**(wall | dict(gflops=80.0)))["read_records"]() == {}
    # the same root with another budget: refused end to end, with the runs named
    r = report("b.ipynb", "-p", "budget_steps", "5")
    assert r.returncode != 0 and "trained with another budget: digits/ijepa-s0 (4 steps)" in r.stderr
    # a report from records only (trains nothing), in one execution:
    hj = rec[rec.variant == "hjepa"]
    append_records(rec_csv, hj.assign(variant="hjepa+cut-all",   # a diagnostic recorded at this report's config
                                      config=ns["params_key"]("digits", "hjepa+cut-all", 0)))
    append_records(rec_csv, hj.assign(variant="hjepa+level0-only",  # an ablation, recorded with hjepa's probe
                                      config=ns["params_key"]("digits", "hjepa+level0-only", 0)))
    # the pairs at a second step budget, from records: the budget question gets its rows and its gap figure
    append_records(rec_csv, rec.assign(config=[ns["params_key"]("digits", v, 0, 8) for v in rec.variant], budget="8 steps", steps=8))
    before = pd.read_csv(rec_csv)
    before.assign(variant=before.variant.replace({"hjepa": "hjepa-old-name"})).to_csv(rec_csv, index=False)  # renamed
    rec.iloc[:1].assign(device="other-device", knn=0.123).to_csv(tmp_path / "nbs/experiments/results_replication.csv", index=False)
    r = report("r.ipynb", "-p", "train_missing", "False", "-y", "variants: [ijepa, hjepa, hjepa+vicreg]",
               "-y", "diagnostics: [hjepa+cut-all, hjepa+separate]", "-y", "hierarchy_budgets: [4, 8]",
               "-y", "ablations: [hjepa+level0-only, hjepa+fpn]", root=tmp_path / "elsewhere")
    assert r.returncode == 0, r.stderr[-3000:]
    hier = next(c for c in nbformat.read(tmp_path / "r.ipynb", as_version=4).cells if "def pair_rows" in c.source)
    assert sum("image/png" in o.get("data", {}) for o in hier.outputs) == 2  # the gap along the budget, then the pairs' bars
    table = next(str(o["data"]["text/plain"]) for o in hier.outputs if "steps to flat" in str(o.get("data", {}).get("text/plain")))
    assert re.search(r"^\s*(digits\s+)?4\s+hjepa\s", table, re.M) and re.search(r"^\s*(digits\s+)?8\s+hjepa\s", table, re.M), table
    assert not (tmp_path / "elsewhere").exists()                   # nothing was trained
    said = stream_text(tmp_path / "r.ipynb")
    assert "0 runs swept" in said and ", 2 taken from" in said, said
    # records are matched by config, not by name: hjepa's renamed row still serves hjepa, and is not written again
    left = next(l for l in said.splitlines() if "left out (train_missing=False; neither recorded nor finished" in l)
    assert "hjepa+vicreg-s0" in left and "hjepa-s0" not in left.replace("hjepa+vicreg-s0", ""), left
    assert sorted(pd.read_csv(rec_csv).variant) == sorted(before.variant.replace({"hjepa": "hjepa-old-name"}))
    # a diagnostic variant is shown from its record only
    md = "\n".join(str(o["data"]["text/markdown"]) for o in outputs(tmp_path / "r.ipynb", "text/markdown"))
    assert "`hjepa+cut-all` digits 1 of 1 seeds; `hjepa+separate` none recorded" in md
    # the answer sets each recorded ablation against hjepa and ijepa (an unrecorded one is left out)
    ij_minus_hj = f"{100 * (hj.probe.iloc[0] - rec[rec.variant == 'ijepa'].probe.iloc[0]):+.1f}"
    assert (f"**The hierarchy's ablations (digits):** `hjepa` {100 * hj.probe.iloc[0]:.1f} (1 seed); `hjepa+level0-only` "
            f"{100 * hj.probe.iloc[0]:.1f} (1 seed): +0.0 vs `hjepa`, {ij_minus_hj} vs `ijepa`.") in md, md
    # a recorded run made again on another device (the replication records) is shown next to its record
    rep = [t for o in outputs(tmp_path / "r.ipynb", "text/plain") if "other-device" in (t := str(o["data"]["text/plain"]))]
    assert len(rep) == 1 and f"digits/{rec.variant.iloc[0]}-s0" in rep[0], rep   # one table, naming the run
    lines = rep[0].splitlines()
    assert any("replication" in l and "other-device" in l and "12.3" in l for l in lines), rep[0]  # its own kNN
    assert any("replication" in l and l.split()[-1] == "True" for l in lines), rep[0]  # same init as the record
