#!/usr/bin/env python
"""Build the hjepa docs site offline (no Quarto), or README.md, from the notebooks in nbs/.

What `nbdev_docs` does with Quarto, done with nbdev's own processors and nbconvert:

1. every notebook is **executed** (they are committed without outputs) in a fresh process, in nbs/,
   with execnb's `CaptureShell` exactly as `nbdev_test` runs it: cells flagged `#| slow` or `#| gpu`
   (settings.ini `tst_flags`) are skipped, figures are captured inline. Two notebooks run at a time;
2. nbdev's docs processors (`nbdev.processors.FilterDefaults`, as `nbdev_proc_nbs` applies them) turn
   the executed notebook into the page: frontmatter (title, description, output file name), `show_doc`
   signatures and docments tables (re-rendered), `#| hide` and exported cells dropped, doc links;
3. nbconvert's HTML exporter renders the cells (images embedded as base64), and a common page
   template adds the title, the sidebar (every notebook in nbs/, in the order of nbdev's sidebar.yml:
   index, 00_config ... 08_eval, then experiments/*) and the stylesheet.

A notebook that fails to execute or process fails the build with its name and traceback; nothing is
written to the output folder unless every page was built.

    python tools/build_docs.py                      # all notebooks -> _docs/
    python tools/build_docs.py --only 00_config     # just that page (sidebar still lists every chapter)
    python tools/build_docs.py --no-exec            # render as committed (show_doc output only)
    python tools/build_docs.py --readme             # README.md from nbs/index.ipynb (like nbdev_readme)
    python tools/build_docs.py --exec-to _exec/nbs  # executed copy of nbs/ for `nbdev_docs --path` (Quarto)
"""
from __future__ import annotations

import argparse
import configparser
import html
import multiprocessing as mp
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def settings() -> dict:
    cp = configparser.ConfigParser()
    cp.read(ROOT / "settings.ini")
    return dict(cp["DEFAULT"])


# ----------------------------------------------------------------------------- notebooks and pages
NBS: Path | None = None  # --nbs overrides settings.ini's nbs_path


def nbs_path() -> Path:
    return NBS or ROOT / settings().get("nbs_path", "nbs")


def list_notebooks(nbs: Path) -> list[Path]:
    """Every docs notebook under `nbs`, in nbdev's sidebar order: in each folder `index` first, then by
    name; a folder's own notebooks before its subfolders. Folders starting with `_` or `.` are skipped."""
    def walk(d: Path) -> list[Path]:
        files = sorted((p for p in d.glob("*.ipynb") if not p.name.startswith(("_", "."))),
                       key=lambda p: ("00" if p.stem == "index" else p.name))
        subs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
        return files + [f for s in subs for f in walk(s)]
    return walk(nbs)


def page_name(nb: Path, nbs: Path) -> str:
    """Output file, relative to the site root, as nbdev/Quarto name it: `00_config.ipynb` -> `config.html`."""
    rel = nb.relative_to(nbs)
    name = re.sub(r"^\d+[a-zA-Z0-9]*_", "", rel.name.lower())
    return (rel.parent / name).with_suffix(".html").as_posix()


def nb_links(body: str, nb: str, up: str, nbs: Path) -> str:
    """Relative links to notebooks in a page body (`train.ipynb`, `../02_encoders.ipynb#x`) point at their pages, as
    Quarto rewrites them; `nb` is the page's notebook relative to `nbs`, `up` the way from its page to the site root."""
    def page(m):
        target = os.path.normpath(Path(nb).parent / m[1])
        if target.startswith(".."): return m[0]  # outside nbs/: left alone
        return f'href="{up}{page_name(nbs / target, nbs)}{m[2] or ""}"'
    return re.sub(r'href="(?![a-z]+:|/|#)([^"#]+?\.ipynb)(#[^"]*)?"', page, body)


def nb_title(nb: Path) -> tuple[str, str]:
    """(title, description) from the notebook's frontmatter (first `# Title` / `> description` cell)."""
    from nbdev.frontmatter import FrontmatterProc
    from nbdev.process import NBProcessor
    fm = getattr(NBProcessor(nb, procs=FrontmatterProc, process=True).nb, "frontmatter_", {}) or {}
    return str(fm.get("title") or nb.stem), str(fm.get("description") or "")


def _rel(p: Path) -> str:
    try:
        return p.relative_to(ROOT).as_posix()
    except ValueError:
        return str(p)


def skip_flags() -> set[str]:
    return set(settings().get("tst_flags", "slow|gpu").split("|")) - {""}


# ----------------------------------------------------------------------------- worker: one notebook
def _directives(cell) -> dict:
    from nbdev.process import extract_directives
    return extract_directives(cell, remove=False) if cell.cell_type == "code" else {}


def execute_nb(nb, path: Path, flags: set[str], timeout: int | None):
    """Run every code cell of `nb` (read with execnb) in nbs/ as nbdev_test does, outputs kept.
    Raises RuntimeError naming the notebook and the cell on the first error."""
    from execnb.shell import CaptureShell
    shell = CaptureShell(path, timeout=timeout)
    old = os.getcwd()
    os.chdir(path.parent)
    try:
        for i, cell in enumerate(nb.cells):
            cell.idx_ = i
            if cell.cell_type != "code":
                continue
            d = _directives(cell)
            if "nbdev_export(" in cell.source or d.get("eval:", [""])[0].lower() == "false" or flags & d.keys():
                continue
            shell.cell(cell)
            if shell.exc:
                raise RuntimeError(f"{path.name} failed to execute:\n{shell.prettytb(fname=path)}")
    finally:
        os.chdir(old)
    return shell


_QUARTO_OPT = re.compile(r"^\s*#\|\s*([\w-]+)\s*:\s*(\S+)\s*$")


def _quarto_tags(cell) -> None:
    """Honour Quarto's cell options that nbdev leaves in the source (`#| echo: false`, `#| output:
    false`, `#| include: false`) with nbconvert tags, and drop those option lines from the shown code."""
    if cell.cell_type != "code":
        return
    lines, opts = [], {}
    for ln in cell.source.splitlines():
        m = _QUARTO_OPT.match(ln)
        if m and not lines:
            opts[m.group(1)] = m.group(2).lower()
        else:
            lines.append(ln)
    cell.source = "\n".join(lines).strip("\n")
    tags = list(cell.get("metadata", {}).get("tags", []))
    if opts.get("include") == "false":
        tags.append("docs_remove_cell")
    if opts.get("echo") == "false":
        tags.append("docs_remove_input")
    if opts.get("output") == "false":
        tags.append("docs_remove_output")
    if not cell.source.strip():
        tags.append("docs_remove_input")
    if tags:
        cell.setdefault("metadata", {})["tags"] = tags


def _filters(shell=None):
    """nbdev's docs processors (what `nbdev_proc_nbs` applies). Given the shell that already executed the
    whole notebook, `exec_show_docs` (which re-runs exported and import cells in a fresh shell) is replaced
    by running just the `show_doc` cells (including those `add_show_docs` inserts) in that shell."""
    from nbdev import processors as P

    if shell is None:
        return P.FilterDefaults()

    class show_docs_in_shell(P.Processor):
        def begin(self):
            shell.run_cell("from nbdev.showdoc import show_doc")

        def __call__(self, cell):
            if not P._is_showdoc(cell):
                return
            shell.cell(cell)
            if shell.exc:
                raise RuntimeError(f"show_doc cell {cell.idx_} failed:\n{cell.source}\n{shell.prettytb()}")

    class Filters(P.FilterDefaults):
        def base_procs(self):
            return [show_docs_in_shell if p is P.exec_show_docs else p for p in super().base_procs()]

    return Filters()


def process_nb(nb, shell=None):
    """nbdev's docs processing of `nb`; returns (nbformat notebook, frontmatter)."""
    import nbformat
    from execnb.nbio import nb2str
    os.environ["IN_TEST"] = "1"
    _filters(shell)(nb)
    fm = dict(getattr(nb, "frontmatter_", {}) or {})
    nb.cells = [c for c in nb.cells if not (c.cell_type == "raw" and c.source.lstrip().startswith("---"))]
    for c in nb.cells:
        _quarto_tags(c)
        if c.get("outputs"):  # e.g. an empty display_data from a figure closed before display
            c.outputs = [o for o in c.outputs if o.get("output_type") not in ("display_data", "execute_result")
                         or o.get("data")]
            for o in c.outputs:  # ipywidgets need a live kernel: say so instead of printing their repr
                if "application/vnd.jupyter.widget-view+json" in o.get("data", {}):
                    o["data"] = {"text/markdown": "*(interactive widget: open this notebook in JupyterLab to use it)*"}
    return nbformat.reads(nb2str(nb), as_version=4), fm


def render_body(nb) -> str:
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    ex = HTMLExporter(template_name="basic", exclude_input_prompt=True, exclude_output_prompt=True,
                      anchor_link_text="#")
    ex.register_preprocessor(TagRemovePreprocessor(
        remove_cell_tags={"docs_remove_cell"}, remove_input_tags={"docs_remove_input"},
        remove_all_outputs_tags={"docs_remove_output"}, enabled=True), enabled=True)
    body, _ = ex.from_notebook_node(nb)
    return body


def build_one(path: str, execute: bool, flags: list[str], timeout: int | None, mode: str) -> dict:
    """Worker (a fresh process per notebook). mode: 'html' (page body), 'md' (README), 'ipynb' (executed copy)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["IN_TEST"] = "1"
    # This worker was spawned (a clean interpreter per notebook); the notebook's own subprocesses (DataLoader
    # workers) must fork as under nbdev_test/pytest, so classes defined in notebook cells reach them.
    if sys.platform.startswith("linux"):
        mp.set_start_method("fork", force=True)
    sys.path.insert(0, str(ROOT))
    path = Path(path)
    t0 = time.time()
    try:
        from execnb.nbio import read_nb, nb2str
        nb = read_nb(path)
        if nb.cells and re.search(r"^(- )?skip_exec:\s*true\s*$", nb.cells[0].source, re.M):
            execute = False  # frontmatter `skip_exec: true`: an executed report whose stored outputs are the page
        shell = execute_nb(nb, path, set(flags), timeout) if execute else None
        if mode == "ipynb":
            return dict(path=str(path), ok=True, ipynb=nb2str(nb), secs=time.time() - t0)
        cwd = os.getcwd()
        os.chdir(path.parent)
        try:
            nbn, fm = process_nb(nb, shell)
        finally:
            os.chdir(cwd)
        if mode == "md":
            from nbconvert import MarkdownExporter
            md, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nbn)
            return dict(path=str(path), ok=True, md=md, fm=fm, secs=time.time() - t0)
        return dict(path=str(path), ok=True, body=render_body(nbn), fm=fm, secs=time.time() - t0)
    except Exception as e:  # reported by the parent with the notebook's name
        msg = str(e) if isinstance(e, RuntimeError) and "failed to execute" in str(e) else traceback.format_exc()
        return dict(path=str(path), ok=False, error=msg, secs=time.time() - t0)


def run_all(paths: list[Path], execute: bool, jobs: int, timeout: int | None, mode: str = "html") -> list[dict]:
    flags = sorted(skip_flags())
    args = [(str(p), execute, flags, timeout, mode) for p in paths]
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(paths))), mp_context=ctx,
                             max_tasks_per_child=1) as pool:
        futs = [pool.submit(build_one, *a) for a in args]
        res = []
        for p, f in zip(paths, futs):
            r = f.result()
            print(f"  {'ok  ' if r['ok'] else 'FAIL'} {_rel(p)}  ({r['secs']:.1f}s)", flush=True)
            res.append(r)
    return res


# ----------------------------------------------------------------------------- page template
CSS = r"""
:root { --side: 17rem; --fg: #1f2328; --muted: #59636e; --accent: #2c5fa8; --line: #e3e6ea; --code: #f6f8fa; }
* { box-sizing: border-box; }
html { font-size: 16px; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.6;
  font-family: -apple-system, "Segoe UI", "Noto Sans", "DejaVu Sans", Helvetica, Arial, sans-serif; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
#sidebar { position: fixed; top: 0; left: 0; bottom: 0; width: var(--side); overflow-y: auto;
  background: #f7f8fa; border-right: 1px solid var(--line); padding: 1.4rem 1.1rem; font-size: .93rem; }
#sidebar .site { font-size: 1.35rem; font-weight: 700; color: var(--fg); display: block; }
#sidebar .tagline { color: var(--muted); font-size: .8rem; line-height: 1.35; margin: .3rem 0 1.1rem; }
#sidebar ul { list-style: none; margin: 0; padding: 0; }
#sidebar li a { display: block; padding: .28rem .6rem; border-radius: 6px; color: var(--fg); }
#sidebar li a:hover { background: #e9edf2; text-decoration: none; }
#sidebar li a.active { background: var(--accent); color: #fff; font-weight: 600; }
#sidebar .section { margin: 1rem 0 .3rem .6rem; font-size: .75rem; font-weight: 700; letter-spacing: .06em;
  text-transform: uppercase; color: var(--muted); }
#sidebar .nb { display: block; font-size: .72rem; opacity: .65; font-family: ui-monospace, monospace; }
main { margin-left: var(--side); padding: 2rem 3rem 4rem; }
article { max-width: 58rem; }
header.title h1 { font-size: 2.1rem; margin: 0 0 .3rem; line-height: 1.2; }
header.title p.description { font-size: 1.1rem; color: var(--muted); margin: 0 0 1.6rem; }
header.title { border-bottom: 1px solid var(--line); margin-bottom: 1.2rem; }
h1, h2, h3, h4 { line-height: 1.25; margin: 1.8rem 0 .7rem; }
h2 { font-size: 1.55rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
h3 { font-size: 1.22rem; } h4 { font-size: 1.05rem; }
.anchor-link { visibility: hidden; margin-left: .35rem; font-size: .8em; color: #aab; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link, h4:hover .anchor-link { visibility: visible; }
p, ul, ol { margin: .6rem 0; }
blockquote { margin: .8rem 0; padding: .2rem 1rem; border-left: 4px solid var(--line); color: var(--muted); }
code { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .86em; }
:not(pre) > code { background: var(--code); padding: .1em .35em; border-radius: 4px; }
pre { background: var(--code); border: 1px solid var(--line); border-radius: 6px; padding: .7rem .9rem;
  overflow-x: auto; line-height: 1.45; font-size: .88rem; margin: .5rem 0; }
pre code { background: none; padding: 0; font-size: 1em; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid var(--line); padding: .35rem .65rem; text-align: left; vertical-align: top; }
th { background: #f2f4f7; } tr:nth-child(even) td { background: #fbfcfd; }
img { max-width: 100%; height: auto; }
.cell { margin: .9rem 0; }
.prompt, .jp-Collapser, .jp-InputPrompt, .jp-OutputPrompt { display: none; }
.input_area .highlight pre, .jp-InputArea .highlight pre { border-left: 3px solid var(--accent); }
.output_subarea pre, .jp-OutputArea-output pre { background: #fff; border: 1px dashed var(--line); }
.output_stderr pre, .output_error pre { background: #fff6f6; border-color: #f3c6c6; }
.output_markdown pre, .jp-RenderedMarkdown pre { background: var(--code); border-style: solid; white-space: pre-wrap; }
.output_png, .output_jpeg, .output_svg, .jp-RenderedImage { margin: .4rem 0; }
.output_png img, .output_jpeg img, .jp-RenderedImage img { border: 1px solid var(--line); border-radius: 4px; }
hr { border: 0; border-top: 1px solid var(--line); margin: 1.4rem 0; }
.output_markdown h3, .jp-RenderedMarkdown h3 { font-size: 1.15rem; margin-top: 1.6rem; font-family: ui-monospace, monospace; }
footer { margin-top: 3rem; padding-top: .8rem; border-top: 1px solid var(--line); color: var(--muted); font-size: .8rem; }
@media (max-width: 900px) { #sidebar { position: static; width: auto; border-right: 0; border-bottom: 1px solid var(--line); }
  main { margin-left: 0; padding: 1.2rem; } }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="hjepa tools/build_docs.py (offline nbdev docs)">
<title>{page_title}</title>
<meta name="description" content="{description}">
<link rel="stylesheet" href="{up}site.css">
<script>/* record each figure's page offset (data-top), read by the browser test to screenshot it */
addEventListener("load", () => document.querySelectorAll("img[id^=fig-]").forEach(e =>
  e.dataset.top = Math.round(e.getBoundingClientRect().top + scrollY)));</script>
</head>
<body>
<nav id="sidebar" aria-label="chapters">
<a class="site" href="{up}index.html">{site_title}</a>
<div class="tagline">{site_description}</div>
{sidebar}
</nav>
<main>
<article>
<header class="title"><h1>{title}</h1>{description_html}</header>
{body}
</article>
<footer>Rendered from <code>{source}</code>{exec_note} &middot; <a href="{repo}">{repo}</a></footer>
</main>
</body>
</html>
"""


def _inline_md(s: str) -> str:
    """Escape `s`, rendering `code` spans (frontmatter descriptions are one line of markdown)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(s))


def sidebar_html(entries: list[dict], current: str, up: str) -> str:
    out, section = ["<ul>"], None
    for e in entries:
        sec = str(Path(e["page"]).parent)
        if sec != "." and sec != section:
            section = sec
            out.append(f'<li class="section">{html.escape(sec.replace("_", " "))}</li>')
        cls = ' class="active" aria-current="page"' if e["page"] == current else ""
        out.append(f'<li><a href="{up}{e["page"]}"{cls} data-nb="{html.escape(e["nb"])}">'
                   f'{html.escape(e["title"])}<span class="nb">{html.escape(Path(e["nb"]).name)}</span></a></li>')
    out.append("</ul>")
    return "\n".join(out)


def write_site(out: Path, results: list[dict], entries: list[dict], executed: bool) -> None:
    cfg = settings()
    from pygments.formatters import HtmlFormatter
    site_url = cfg.get("doc_host", "").rstrip("/") + cfg.get("doc_baseurl", "").rstrip("/") + "/"
    (out / "site.css").write_text(CSS + HtmlFormatter(style="default").get_style_defs(".highlight"))
    by_nb = {e["nb"]: e for e in entries}
    for r in results:
        nb = Path(r["path"]).relative_to(nbs_path()).as_posix()
        e = by_nb[nb]
        fm = r["fm"]
        page = fm.get("output-file") and (Path(e["page"]).parent / fm["output-file"]).as_posix() or e["page"]
        up = "../" * (page.count("/"))
        body = r["body"]
        if site_url != "/":  # nbdev doc links point at the published site: keep them inside this build
            body = body.replace(site_url, up or "./")
        body = nb_links(body, nb, up, nbs_path())
        n = iter(range(1, 10**6))  # anchors #fig-1, #fig-2 ... on the figures (links, screenshots)
        body = re.sub(r'<img (?=[^>]*src="data:image)', lambda m: f'<img id="fig-{next(n)}" ', body)
        title = str(fm.get("title") or e["title"])
        desc = str(fm.get("description") or "")
        dest = out / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(PAGE.format(
            page_title=html.escape(title if page == "index.html" else f"{title} – {cfg.get('title', 'hjepa')}"),
            site_title=html.escape(cfg.get("title", "hjepa")), site_description=html.escape(cfg.get("description", "")),
            description=html.escape(desc), title=html.escape(title),
            description_html=f'<p class="description">{_inline_md(desc)}</p>' if desc else "",
            sidebar=sidebar_html(entries, page, up), body=body, up=up, source=_rel(nbs_path() / nb),
            exec_note="" if executed else " (not executed)", repo=html.escape(cfg.get("git_url", ""))),
            encoding="utf-8")


# ----------------------------------------------------------------------------- commands
def select(paths: list[Path], only: list[str], nbs: Path) -> list[Path]:
    if not only:
        return paths
    keys = {o.strip().removesuffix(".ipynb") for o in only if o.strip()}
    sel = [p for p in paths if p.stem in keys or p.relative_to(nbs).with_suffix("").as_posix() in keys]
    missing = keys - {p.stem for p in sel} - {p.relative_to(nbs).with_suffix("").as_posix() for p in sel}
    if missing:
        sys.exit(f"--only: no notebook named {', '.join(sorted(missing))} in {nbs} "
                 f"(have: {', '.join(p.relative_to(nbs).with_suffix('').as_posix() for p in paths)})")
    return sel


def fail(results: list[dict]) -> None:
    bad = [r for r in results if not r["ok"]]
    if bad:
        for r in bad:
            print(f"\nERROR in {_rel(Path(r['path']))}:\n{r['error']}", file=sys.stderr)
        sys.exit(f"docs build failed: {', '.join(Path(r['path']).name for r in bad)} "
                 f"(nothing written to the output folder)")


def build_site(out: Path, only: list[str], execute: bool, jobs: int, timeout: int | None) -> None:
    nbs = nbs_path()
    paths = list_notebooks(nbs)
    entries = [dict(nb=p.relative_to(nbs).as_posix(), page=page_name(p, nbs), title=nb_title(p)[0]) for p in paths]
    todo = select(paths, only, nbs)
    print(f"building {len(todo)} of {len(paths)} pages into {out} "
          f"({'executing' if execute else 'not executing'}, {jobs} at a time)", flush=True)
    results = run_all(todo, execute, jobs, timeout)
    fail(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".docs-", dir=out.parent))
    try:
        write_site(tmp, results, entries, execute)
        if out.exists():
            shutil.rmtree(out)
        tmp.chmod(0o755)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {len(results)} pages to {out}: {', '.join(sorted(str(p.relative_to(out)) for p in out.rglob('*.html')))}")


def build_readme(dest: Path) -> None:
    """README.md from the readme notebook, as `nbdev_readme` renders it (processed, not executed)."""
    cfg = settings()
    nb = nbs_path() / cfg.get("readme_nb", "index.ipynb")
    (r,) = run_all([nb], execute=False, jobs=1, timeout=None, mode="md")
    fail([r])
    fm, md = r["fm"], r["md"].strip()
    head = f"# {fm.get('title', cfg.get('title', 'hjepa'))}\n\n"
    if fm.get("description"):
        head += f"> {fm['description']}\n\n"
    md = re.sub(r"\n{3,}", "\n\n", md)
    dest.write_text(head + md + "\n", encoding="utf-8")
    print(f"wrote {dest} from nbs/{nb.name}")


def exec_copy(dest: Path, only: list[str], jobs: int, timeout: int | None) -> None:
    """Executed copy of nbs/ (notebooks with outputs, plus the Quarto files) for `nbdev_docs --path`."""
    nbs = nbs_path()
    paths = select(list_notebooks(nbs), only, nbs)
    results = run_all(paths, True, jobs, timeout, mode="ipynb")
    fail(results)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(nbs, dest, symlinks=False, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    for r in results:
        (dest / Path(r["path"]).relative_to(nbs)).write_text(r["ipynb"], encoding="utf-8")
    print(f"wrote executed notebooks to {dest}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="site folder (default: settings.ini doc_path, _docs)")
    ap.add_argument("--only", action="append", default=[],
                    help="build only these notebooks (stem or path under nbs/ without .ipynb; comma-separated, repeatable)")
    ap.add_argument("--no-exec", action="store_true", help="do not execute the notebooks (render as committed)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("DOCS_JOBS", 2)), help="notebooks executed at once")
    ap.add_argument("--timeout", type=int, default=900, help="seconds allowed per cell")
    ap.add_argument("--readme", nargs="?", const=ROOT / "README.md", type=Path, default=None,
                    help="write README.md (or the given path) from the readme notebook instead of the site")
    ap.add_argument("--exec-to", type=Path, default=None, help="write executed notebooks (a copy of nbs/) there instead")
    ap.add_argument("--nbs", type=Path, default=None, help="notebook folder (default: settings.ini nbs_path)")
    a = ap.parse_args(argv)
    global NBS
    NBS = a.nbs.resolve() if a.nbs else None
    only = [o for s in a.only for o in s.split(",") if o.strip()]
    os.chdir(ROOT)
    t0 = time.time()
    if a.readme:
        build_readme(a.readme)
    elif a.exec_to:
        exec_copy(a.exec_to, only, a.jobs, a.timeout)
    else:
        build_site(a.out or ROOT / settings().get("doc_path", "_docs"), only, not a.no_exec, a.jobs, a.timeout)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
