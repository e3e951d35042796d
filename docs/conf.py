"""Sphinx configuration of the flask-gosession documentation.

Build (no network needed): ``sphinx-build -W --keep-going -b html docs docs/_build/html``
with the ``[docs]`` extra installed (and ``[all]``, for the provider modules
autodoc imports).
"""
from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "flask-gosession"
author = "The flask-gosession authors"
copyright = "2026, the flask-gosession authors"

try:
    from importlib.metadata import version as _version

    release = _version("flask-gosession")
except Exception:  # not installed: the docs still build from the tree
    release = "0.1.0"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "gosession_config",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings (so [x](#a-heading) links resolve) and fences.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# autodoc: members in source order, type hints in the description.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"show-inheritance": True}
# No intersphinx: the build needs no network. References to Flask, Werkzeug
# and the standard library stay plain text.
nitpicky = False
# An included README section may skip a heading level under the page title.
suppress_warnings = ["myst.header"]

html_theme = "furo"
html_title = f"flask-gosession {release}"
html_static_path: list[str] = []
