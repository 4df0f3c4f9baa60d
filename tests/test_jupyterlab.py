"""The explorers in a real client: JupyterLab served on loopback, driven in headless Chromium by Playwright.

Each test copies an explorer notebook into a fresh server root, opens it in the browser, runs all cells
(Run menu), checks the widgets and the preview rendered, moves a control through the browser and checks
the preview and statistics changed. Screenshots before/after go to the test's tmp dir (paths printed).
Needs Debian's `/usr/bin/chromium` (`make system-deps`) and `playwright` from PyPI; never `playwright install`.
"""
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "nbs" / "experiments"
CHROMIUM = os.environ.get("HJEPA_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-dev-shm-usage"]
CELLS_TIMEOUT = 240_000  # ms for all cells of a notebook on a busy 2-core machine
UPDATE_TIMEOUT = 90_000  # ms for one widget round trip (browser -> kernel -> browser)


def _requirements():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (install Debian's chromium: `make system-deps`)")
    pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed: pip install -e '.[dev]'")
    pytest.importorskip("jupyterlab", reason="jupyterlab is not installed: pip install -e '.[dev]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def _lab_settings(settings_dir: Path):
    "User settings for a quiet, deterministic lab: no news/update checks, every cell rendered (no windowing)."
    files = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
             "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"}}
    for name, value in files.items():
        p = settings_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(value))


@contextmanager
def jupyter_lab(root: Path, state: Path):
    "A JupyterLab server on 127.0.0.1 (random port, random token) serving `root`; always stopped on exit."
    port, token = _free_port(), secrets.token_hex(16)
    for d in ("config", "data", "runtime", "settings", "workspaces"): (state / d).mkdir(parents=True, exist_ok=True)
    _lab_settings(state / "settings")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(state / "config"), JUPYTER_RUNTIME_DIR=str(state / "runtime"),
               JUPYTER_PLATFORM_DIRS="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))  # this checkout's hjepa
    log = open(state / "server.log", "w")
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           f"--LabApp.user_settings_dir={state / 'settings'}", f"--LabApp.workspaces_dir={state / 'workspaces'}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly"] + (["--allow-root"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{(state / 'server.log').read_text()[-3000:]}")
            try:
                _get(f"{base}/api/status?token={token}"); break
            except OSError:
                if time.time() > deadline: raise RuntimeError(f"jupyter lab did not answer on {base} within 120 s")
                time.sleep(0.5)
        yield base, token
    finally:
        try:  # stop the kernels first (they run in their own sessions), then the server's process group
            for k in _get(f"{base}/api/kernels?token={token}"):
                req = urllib.request.Request(f"{base}/api/kernels/{k['id']}?token={token}", method="DELETE")
                urllib.request.urlopen(req, timeout=20).close()
        except Exception:
            pass
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try: os.killpg(proc.pid, sig)
            except ProcessLookupError: break
            try: proc.wait(wait); break
            except subprocess.TimeoutExpired: pass
        log.close()


@contextmanager
def chromium_page(shots: Path):
    "A page in headless Debian Chromium; the browser always closes (after a `failure.png` screenshot on error)."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 1500}).new_page()
            page.set_default_timeout(UPDATE_TIMEOUT)
            try:
                yield page
            except BaseException:
                try: shot(page, shots / "failure.png")
                except Exception: pass
                raise
        finally:
            browser.close()


def open_and_run_all(page, base: str, token: str, name: str):
    "Open notebook `name` in JupyterLab and run all its cells through the Run menu."
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset", wait_until="domcontentloaded", timeout=120_000)
    page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=120_000)
    # a kernel must be attached and idle before we run (the status item shows "Python 3 (ipykernel) | Idle")
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\|\s*Idle")).first.wait_for(timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def wait_all_ran(page, n_code_cells: int):
    "Every code cell shows an execution count (not '*', not empty); fail early with the traceback if a cell raised."
    done = page.wait_for_function(
        r"""n => { const p = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputPrompt')]
                    .map(e => e.textContent.trim());
                  const err = [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                    .find(e => /Traceback \(most recent call last\)|^\w*(Error|Exception)\b/m.test(e.innerText));
                  if (err) return 'error: ' + err.innerText;
                  return p.length === n && p.every(t => /^\[\d+\]:$/.test(t)) ? 'ok' : false; }""",
        arg=n_code_cells, timeout=CELLS_TIMEOUT).json_value()
    if done != "ok": pytest.fail(f"a cell raised in the browser:\n{done[:3000]}")


def kernel_idle(page):
    "Wait until the status bar says the kernel is idle (all pending widget updates computed)."
    page.wait_for_timeout(300)
    page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\|\s*Idle")).first.wait_for(timeout=UPDATE_TIMEOUT)


def code_cells(nb_path: Path) -> int:
    return sum(c["cell_type"] == "code" for c in json.loads(nb_path.read_text())["cells"])


def shot(page, path: Path) -> Path:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_mask_explorer_in_jupyterlab(tmp_path):
    _requirements()
    root = tmp_path / "root"; root.mkdir()
    nb = shutil.copy(EXPERIMENTS / "explore_masks.ipynb", root / "explore_masks.ipynb")
    with jupyter_lab(root, tmp_path / "jupyter") as (base, token), chromium_page(tmp_path) as page:
        open_and_run_all(page, base, token, "explore_masks.ipynb")
        wait_all_ran(page, code_cells(Path(nb)))
        ui = page.locator(".jp-OutputArea-output .widget-vbox").first
        ui.wait_for(timeout=UPDATE_TIMEOUT)
        sliders = ui.locator(".widget-hslider")
        assert sliders.count() >= 6, f"expected the masker's sliders, found {sliders.count()}"
        assert ui.locator(".widget-dropdown select").count() >= 1, "the context-mode dropdown is missing"
        preview = ui.locator("img.widget-image").first
        preview.wait_for(state="visible")
        page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=preview.element_handle())
        stats = ui.locator(".widget-html-content", has=page.locator("table")).first
        stats.wait_for(state="visible")
        before = dict(src=preview.get_attribute("src"), png=preview.screenshot(), stats=stats.inner_text())
        shot(page, tmp_path / "masks_before.png")

        # move the seed slider through its editable readout, as a user typing a value would
        seed = sliders.filter(has=page.locator("label", has_text=re.compile(r"^seed$")))
        assert seed.count() == 1, "no 'seed' slider in the mask explorer"
        readout = seed.locator(".widget-readout")
        old_seed = int(readout.inner_text())
        readout.click(); page.keyboard.press("ControlOrMeta+a"); page.keyboard.type(str(old_seed + 7)); page.keyboard.press("Enter")
        page.wait_for_function("([img, src]) => img.getAttribute('src') !== src && img.complete && img.naturalWidth > 100",
                               arg=[preview.element_handle(), before["src"]], timeout=UPDATE_TIMEOUT)
        page.wait_for_function("([el, txt]) => el.innerText !== txt", arg=[stats.element_handle(), before["stats"]],
                               timeout=UPDATE_TIMEOUT)
        assert int(readout.inner_text()) == old_seed + 7
        after_seed = dict(src=preview.get_attribute("src"), png=preview.screenshot(), stats=stats.inner_text())
        assert after_seed["png"] != before["png"], "the preview's pixels did not change with the seed"
        assert after_seed["stats"] != before["stats"]

        # and a dropdown: guaranteed context enables the min-context slider and redraws
        mode = ui.locator(".widget-dropdown", has=page.locator("label", has_text="context mode")).locator("select")
        min_ctx = sliders.filter(has=page.locator("label", has_text="min context"))
        assert min_ctx.locator(".widget-readout").get_attribute("contenteditable") == "false"  # disabled in ijepa mode
        mode.select_option("guaranteed")
        page.wait_for_function("([img, src]) => img.getAttribute('src') !== src && img.complete && img.naturalWidth > 100",
                               arg=[preview.element_handle(), after_seed["src"]], timeout=UPDATE_TIMEOUT)
        page.wait_for_function("el => el.getAttribute('contenteditable') === 'true'",
                               arg=min_ctx.locator(".widget-readout").element_handle(), timeout=UPDATE_TIMEOUT)
        kernel_idle(page)
        shot(page, tmp_path / "masks_after.png")
        print(f"mask explorer: seed {old_seed} -> {old_seed + 7}, context mode ijepa -> guaranteed; "
              f"stats before: {before['stats'][:160]!r}\nstats after: {stats.inner_text()[:160]!r}")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    "A run directory from a few steps of the micro model (metrics every 2 steps, 2 checkpoints)."
    models = pytest.importorskip("hjepa.models", reason="hjepa.models is not built yet (nbs/02-04)")
    if not hasattr(models, "HJEPA"): pytest.skip("hjepa.models.HJEPA is not built yet (nbs/02-04): no run to explore")
    from hjepa.config import get_config
    from hjepa.train import train
    import torch
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("collapse") / "micro_run"
    return train(get_config("micro", ["train.max_steps=8", "train.log_every=2", "train.ckpt_every=4", f"train.out_dir={out}"]))


def test_collapse_explorer_in_jupyterlab(tmp_path, tiny_run):
    _requirements()
    import papermill as pm
    root = tmp_path / "root"; root.mkdir()
    nb = root / "explore_collapse.ipynb"
    pm.execute_notebook(str(EXPERIMENTS / "explore_collapse.ipynb"), str(nb), parameters=dict(run_dir=str(tiny_run)),
                        prepare_only=True, progress_bar=False)
    with jupyter_lab(root, tmp_path / "jupyter") as (base, token), chromium_page(tmp_path) as page:
        open_and_run_all(page, base, token, nb.name)
        wait_all_ran(page, code_cells(nb))
        ui = page.locator(".jp-OutputArea-output .widget-vbox").first
        ui.wait_for(timeout=UPDATE_TIMEOUT)
        plots = ui.locator(".js-plotly-plot")
        # three plotly FigureWidgets: the metric, the per-level losses, the std histogram + spectrum
        page.wait_for_function("el => [...el.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length >= 3",
                               arg=ui.element_handle(), timeout=UPDATE_TIMEOUT)
        metric_plot = plots.first
        assert metric_plot.is_visible()
        select = ui.locator(".widget-dropdown", has=page.locator("label", has_text=re.compile(r"^metric$"))).locator("select")
        assert select.count() == 1, "no metric dropdown"
        options = select.locator("option").all_inner_texts()
        current = select.input_value()
        gd = metric_plot.element_handle()
        try:
            page.wait_for_function("gd => gd.data && gd.data.length > 0 && gd.data[0].y && gd.data[0].y.length > 0 && gd.layout.title",
                                   arg=gd, timeout=UPDATE_TIMEOUT)
        except Exception:
            state = page.evaluate("gd => JSON.stringify({data: gd.data, title: gd.layout && gd.layout.title})", gd)
            metrics = (Path(tiny_run) / "metrics.jsonl").read_text()[:1500]
            pytest.fail(f"the metric plot has no data in the browser: {state[:1500]}\nmetrics.jsonl: {metrics}")
        trace = "gd => JSON.stringify({t: gd.layout.title && (gd.layout.title.text ?? gd.layout.title), y: gd.data[0].y})"
        before = json.loads(page.evaluate(trace, gd))
        assert before["t"] == current and len(before["y"]) >= 2, f"metric plot shows {before}, dropdown says {current!r}"
        before_png = metric_plot.screenshot()
        shot(page, tmp_path / "collapse_before.png")

        others = [o for o in options if o != current]
        other = next((o for o in others if "level" in o), others[0])  # prefer a per-level loss
        select.select_option(other)
        page.wait_for_function("([gd, t]) => { const x = gd.layout.title; return (x && (x.text ?? x)) === t; }",
                               arg=[gd, other], timeout=UPDATE_TIMEOUT)
        after = json.loads(page.evaluate(trace, gd))
        assert after["t"] == other and after["y"] != before["y"], f"the metric plot did not change: {before} -> {after}"
        page.wait_for_timeout(500)  # let plotly finish drawing before the pixel comparison
        assert metric_plot.screenshot() != before_png, "the metric plot's pixels did not change"
        kernel_idle(page)
        shot(page, tmp_path / "collapse_after.png")
        print(f"collapse explorer: metric {current!r} -> {other!r}; y {before['y'][:4]} -> {after['y'][:4]}")
