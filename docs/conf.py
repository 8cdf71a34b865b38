"""Sphinx settings of siro_data's documentation.

Sphinx with numpydoc renders the docstrings as written (numpydoc, as pandas and NumPy write
theirs); MyST reads the guides as Markdown, which GitHub shows too; sphinx-argparse writes the
command-line reference from the command's own parser. The build needs no network: no
intersphinx, no theme assets fetched.
"""

from __future__ import annotations

import siro_data

project = "siro_data"
author = "The siro_data authors"
copyright = "2026, The siro_data authors"
release = siro_data.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinxarg.ext",
]

source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3  # links to a page's sections: page.md#section-title
myst_enable_extensions = ["colon_fence"]
nitpicky = False

autodoc_typehints = "none"  # numpydoc's Parameters sections say the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
autosummary_generate = False

html_theme = "furo"
html_title = f"siro_data {release}"
