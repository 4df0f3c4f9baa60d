"""Pieces of the offline docs builder (tools/build_docs.py) that need no browser."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_docs", ROOT / "tools" / "build_docs.py")
build_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_docs)


def test_notebook_links_point_at_pages():
    "Relative links to notebooks become links to their pages (as Quarto rewrites them); other links stay."
    nbs = ROOT / "nbs"
    pages = {build_docs.page_name(p, nbs) for p in build_docs.list_notebooks(nbs)}
    body = ('<a href="train.ipynb">t</a> <a href="../02_encoders.ipynb#patch-embedding">e</a> '
            '<a href="https://example.org/x.ipynb">x</a> <a href="#top">a</a> <a href="../../elsewhere.ipynb">o</a>')
    out = build_docs.nb_links(body, "experiments/results.ipynb", "../", nbs)
    assert '<a href="../experiments/train.html">t</a>' in out and '<a href="../encoders.html#patch-embedding">e</a>' in out
    assert {"experiments/train.html", "encoders.html"} <= pages                 # the pages those links name exist
    assert 'href="https://example.org/x.ipynb"' in out and 'href="#top"' in out and 'href="../../elsewhere.ipynb"' in out
    assert build_docs.nb_links('<a href="experiments/results.ipynb">r</a>', "02_encoders.ipynb", "", nbs) == \
        '<a href="experiments/results.html">r</a>'
