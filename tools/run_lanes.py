"""Train the results report's runs in parallel lanes, then let one plain report call aggregate them.

Each lane is one papermill execution of `nbs/experiments/results.ipynb` for a single (dataset, variant, seed),
with one torch thread; it trains that run unless it is recorded, and adds its row to the records
(`nbs/experiments/results_runs.csv`, under a file lock). On 2 cores two lanes make more steps per minute than one
two-thread report; on a many-core machine (or one GPU shared by many processes) use more lanes. Afterwards

    papermill nbs/experiments/results.ipynb runs/results/report.ipynb

builds the page from the records without training anything. Examples:

    python tools/run_lanes.py --lanes 2                       # the report's default runs, two at a time
    python tools/run_lanes.py --lanes 16 --datasets digits --variants hjepa hjepa+vicreg --seeds 0 1 2
    python tools/run_lanes.py --lanes 2 --variants ijepa -p budget_steps 20 -p warmup_steps 5   # other report parameters
    python tools/run_lanes.py --run digits hjepa+vicreg 2 --run shapes hjepa+cut-all 0   # these runs, in this order
"""
import argparse
import ast
import itertools
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "nbs/experiments/results.ipynb"


def report_defaults() -> dict:
    "The report's parameter defaults, read from its `parameters` cell."
    import papermill
    return {k: ast.literal_eval(v["default"]) for k, v in papermill.inspect_notebook(str(REPORT)).items()}


def main(argv=None):
    d = report_defaults()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lanes", type=int, default=2, help="runs at a time (default 2)")
    ap.add_argument("--datasets", nargs="+", default=d["datasets"], help=f"default {d['datasets']}")
    ap.add_argument("--variants", nargs="+", default=d["variants"], help=f"default {d['variants']}")
    ap.add_argument("--seeds", nargs="+", type=int, default=d["seeds"], help=f"default {d['seeds']}")
    ap.add_argument("--run", nargs=3, action="append", default=[], metavar=("DATASET", "VARIANT", "SEED"),
                    help="one run, in queue order (repeatable); replaces --datasets/--variants/--seeds")
    ap.add_argument("--out", default="runs/lanes", help="where each lane's executed report and log go")
    ap.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="another report parameter, passed to papermill as -p NAME VALUE")
    a = ap.parse_args(argv)
    if a.lanes < 1: ap.error(f"--lanes={a.lanes}: must be at least 1")
    bad = [n for n, _ in a.param if n not in d or n in ("datasets", "variants", "seeds", "diagnostics")]
    if bad: ap.error(f"unknown or lane-set report parameters {bad}; allowed: "
                     f"{sorted(set(d) - {'datasets', 'variants', 'seeds', 'diagnostics'})}")
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    try:
        queue = [(ds, v, int(s)) for ds, v, s in a.run] or list(itertools.product(a.datasets, a.variants, a.seeds))
    except ValueError:
        ap.error(f"--run DATASET VARIANT SEED: SEED must be an integer, got {[r[2] for r in a.run]}")
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    extra = [x for n, v in a.param for x in ("-p", n, v)]

    def lane(ds, v, s):
        name = f"{ds}_{v}_s{s}"
        cmd = [sys.executable, "-m", "papermill", str(REPORT), str(out / f"{name}.ipynb"), "--log-output", *extra,
               "-y", f"{{datasets: [{ds}], variants: ['{v}'], seeds: [{s}], diagnostics: []}}"]
        t0 = time.time()
        with open(out / f"{name}.log", "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        return name, rc, time.time() - t0

    print(f"{len(queue)} runs in {a.lanes} lanes; logs in {out}/", flush=True)
    failed = []
    with ThreadPoolExecutor(a.lanes) as pool:
        jobs = [pool.submit(lane, *q) for q in queue]
        for i, j in enumerate(as_completed(jobs), 1):
            name, rc, sec = j.result()
            if rc: failed.append(name)
            print(f"[{i}/{len(queue)}] {name}: {'ok' if rc == 0 else f'FAILED (exit {rc}, see {out}/{name}.log)'} in {sec:.0f} s",
                  flush=True)
    if failed: sys.exit(f"{len(failed)} lanes failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
