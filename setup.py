"""Packaging for hjepa: every field comes from `settings.ini` (nbdev's single source of metadata)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read(Path(__file__).parent / "settings.ini")
c = cfg["DEFAULT"]
req = lambda key: c.get(key, "").split()
scripts = [s.strip() for s in c.get("console_scripts", "").splitlines() if s.strip()]
readme = Path(__file__).parent / "README.md"

setuptools.setup(
    name=c["lib_name"],
    version=c["version"],
    description=c["description"],
    long_description=readme.read_text() if readme.exists() else c["description"],
    long_description_content_type="text/markdown",
    author=c["author"],
    author_email=c["author_email"],
    license="Apache-2.0",
    url=c["git_url"],
    keywords=c["keywords"],
    python_requires=">=" + c["min_python"],
    packages=setuptools.find_packages(include=[c["lib_path"], c["lib_path"] + ".*"]),
    include_package_data=True,
    install_requires=req("requirements"),
    extras_require={"dev": req("dev_requirements"), "cuda": ["flash-attn"]},
    entry_points={"console_scripts": scripts, "nbdev": [f"{c['lib_path']}={c['lib_path']}._modidx:d"]},
    zip_safe=False,
)
