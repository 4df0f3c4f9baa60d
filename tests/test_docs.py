"""The offline docs site (tools/build_docs.py) opened in headless Chromium.

Builds index, 00_config and the smallest chapter that draws a matplotlib figure into the test's tmp
dir, serves it on 127.0.0.1, and checks in the browser: page titles, a sidebar link to every
notebook in nbs/, rendered `show_doc` API docs, and a rendered figure. Screenshots are saved under the
test's tmp dir (`index.png`, `api.png`, `figure.png`)."""
import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
BUILD = ROOT / "tools" / "build_docs.py"
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser"))
                 if p and Path(p).exists()), None)
FLAGS = {"slow", "gpu", "hide", "eval:", "export", "exporti", "exports"}
FIG = re.compile(r"\bplt\.(subplots|figure|plot|imshow|show)\(|\.(plot|imshow|scatter|bar|hist|matshow)\(|\bplot_\w+\(")

pytestmark = pytest.mark.browser


def notebooks() -> list[Path]:
    """Every docs notebook (what the sidebar must list): nbs/**/*.ipynb outside _/. folders."""
    return sorted(p for p in NBS.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts))


def page(nb: Path) -> str:
    rel = nb.relative_to(NBS)
    return (rel.parent / re.sub(r"^\d+[a-zA-Z0-9]*_", "", rel.name.lower())).with_suffix(".html").as_posix()


def title(nb: Path) -> str:
    for c in json.loads(nb.read_text())["cells"]:
        if c["cell_type"] == "markdown":
            m = re.match(r"\s*#\s+(.+)", "".join(c["source"]))
            return m.group(1).strip() if m else nb.stem
    return nb.stem


def draws_figure(nb: Path) -> bool:
    """A code cell that runs in the docs build (not #| slow/gpu/hide) and plots with matplotlib."""
    for c in json.loads(nb.read_text())["cells"]:
        src = "".join(c["source"])
        heads = {m.group(1) for m in re.finditer(r"^\s*#\|\s*([\w:-]+)", src, re.M)}
        if c["cell_type"] == "code" and not heads & FLAGS and FIG.search(src):
            return True
    return False


def figure_chapter() -> Path | None:
    cands = [p for p in sorted(NBS.glob("[0-9]*.ipynb")) if p.stem != "00_config" and draws_figure(p)]
    return min(cands, key=lambda p: p.stat().st_size) if cands else None


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.title, self.sidebar, self.imgs, self.svgs, self._in_title, self._in_nav = "", [], [], 0, False, 0
        self.fig_top = None  # page offset of the first figure (set by the page's script on load)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "title":
            self._in_title = True
        elif tag == "nav" and a.get("id") == "sidebar":
            self._in_nav = 1
        elif tag == "a" and self._in_nav and a.get("data-nb"):
            self.sidebar.append((a["data-nb"], a.get("href", "")))
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
            if a.get("id") == "fig-1" and (a.get("data-top") or "").isdigit():
                self.fig_top = int(a["data-top"])
        elif tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag == "nav":
            self._in_nav = 0

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def chromium(*args, user_dir: Path, timeout=90) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={user_dir}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def dom(url: str, tmp: Path) -> Links:
    r = chromium("--dump-dom", url, user_dir=tmp / "profile")
    assert r.returncode == 0 and "<html" in r.stdout, f"chromium --dump-dom {url} failed:\n{r.stderr[-2000:]}"
    p = Links()
    p.feed(r.stdout)
    return p


def screenshot(url: str, png: Path, tmp: Path, top: int = 0) -> Path:
    """1280x900 screenshot of `url` from page offset `top` (a taller window, then cropped)."""
    height = 900 + top
    r = chromium(f"--screenshot={png}", f"--window-size=1280,{height}", url, user_dir=tmp / "profile")
    assert r.returncode == 0 and png.exists(), f"chromium --screenshot {url} failed:\n{r.stderr[-2000:]}"
    from PIL import Image
    im = Image.open(png).convert("RGB")
    assert im.size == (1280, height)
    if top:
        im = im.crop((0, top, 1280, height))
        im.save(png)
    assert len(im.getcolors(1 << 20) or []) > 50, f"{png} looks blank"
    return png


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium, or `make system-deps`)")
    tmp = tmp_path_factory.mktemp("docs")
    nbs = notebooks()  # what the sidebar must list (taken before the build: chapters may be added meanwhile)
    fig = figure_chapter()
    only = ["index", "00_config"] + ([fig.stem] if fig else [])
    r = subprocess.run([sys.executable, str(BUILD), "--out", str(tmp / "site"), "--only", ",".join(only)],
                       capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert r.returncode == 0, f"docs build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    handler = functools.partial(Quiet, directory=str(tmp / "site"))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield dict(tmp=tmp, out=tmp / "site", url=f"http://127.0.0.1:{srv.server_address[1]}/", fig=fig, nbs=nbs)
    srv.shutdown()
    srv.server_close()


def check_sidebar(p: Links, nbs: list[Path], up: str = ""):
    got = dict(p.sidebar)
    want = {nb.relative_to(NBS).as_posix(): up + page(nb) for nb in nbs}
    missing = sorted(set(want) - set(got))
    assert not missing, f"sidebar lacks links to {missing}; it has {sorted(got)}"
    for nb, href in want.items():
        assert got[nb] == href, f"sidebar link for {nb} is {got[nb]!r}, expected {href!r}"
    order = [nb for nb, _ in p.sidebar]
    assert order[0] == "index.ipynb", order
    top = [o for o in order if "/" not in o]
    assert top == ["index.ipynb"] + sorted(o for o in top if o != "index.ipynb"), f"sidebar out of order: {order}"


def test_index_page(site):
    p = dom(site["url"] + "index.html", site["tmp"])
    assert p.title.strip() == title(NBS / "index.ipynb")
    check_sidebar(p, site["nbs"])
    png = screenshot(site["url"] + "index.html", site["tmp"] / "index.png", site["tmp"])
    print(f"screenshot: {png}")


def test_api_page(site):
    nb = NBS / "00_config.ipynb"
    p = dom(site["url"] + page(nb), site["tmp"])
    assert p.title.strip() == f"{title(nb)} – hjepa"
    check_sidebar(p, site["nbs"])
    html = (site["out"] / page(nb)).read_text()
    # show_doc output rendered: the signature of get_config and its docments table
    assert re.search(r'<h3 id="get_config">get_config', html), "show_doc(get_config) heading missing"
    assert re.search(r"<span class=\"nf\">get_config</span>", html), "get_config signature missing"
    assert "<table" in html and "<th" in html, "no docments table on the API page"
    assert "#| hide" not in html and "#| export" not in html, "directives leaked into the page"
    png = screenshot(site["url"] + page(nb), site["tmp"] / "api.png", site["tmp"])
    print(f"screenshot: {png}")


def test_figure_page(site):
    nb = site["fig"]
    if nb is None:  # no chapter draws a figure yet: the index/config pages above are what can be checked
        pytest.skip("no chapter in nbs/ draws a matplotlib figure outside #| slow/gpu/hide cells yet")
    p = dom(site["url"] + page(nb), site["tmp"])
    check_sidebar(p, site["nbs"])
    imgs = [s for s in p.imgs if s.startswith("data:image/")]
    assert imgs or p.svgs, f"no rendered figure (<img src=data:...> or <svg>) on {page(nb)}"
    if imgs:
        import base64, io
        from PIL import Image
        im = Image.open(io.BytesIO(base64.b64decode(imgs[0].split(",", 1)[1])))
        assert min(im.size) >= 32, f"figure on {page(nb)} is only {im.size}"
    # screenshot of the first figure: the page's script records its offset (data-top) on load
    top = max(0, (p.fig_top or 0) - 120) if imgs else 0
    png = screenshot(site["url"] + page(nb), site["tmp"] / "figure.png", site["tmp"], top=top)
    print(f"screenshot: {png}")


def test_failing_notebook_fails_build(tmp_path):
    """A notebook that raises makes the build fail, naming the notebook and the error; nothing is written."""
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "# Broken\n\n> fails"},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
              "source": "raise ValueError('docs build must stop here')"}]
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (nbs / "01_broken.ipynb").write_text(json.dumps(nb))
    out = tmp_path / "site"
    r = subprocess.run([sys.executable, str(BUILD), "--nbs", str(nbs), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode != 0
    err = r.stdout + r.stderr
    assert "01_broken.ipynb" in err and "docs build must stop here" in err and "ValueError" in err, err[-3000:]
    assert not out.exists()
