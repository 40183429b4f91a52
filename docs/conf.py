"""Sphinx configuration: the user guide, the API reference from the
numpydoc docstrings of the public names, and the Performance page's plots,
drawn from the committed bench results (no timing happens here)."""
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)

import fastmm  # noqa: E402  (autodoc reads the installed, built package)
import plot_figures  # noqa: E402

project = "fastmm"
author = "the fastmm developers"
copyright = "the fastmm developers"
release = fastmm.__version__
version = release

extensions = ["sphinx.ext.autodoc", "numpydoc"]
# no internet where the docs are built: no intersphinx inventories to fetch
autodoc_member_order = "bysource"
autodoc_typehints = "none"
# fastmm.dask imports Dask at import; its docstrings need no Dask, so the
# docs extra does not carry it
try:
    import dask.array  # noqa: F401
except ImportError:
    autodoc_mock_imports = ["dask"]
# members are listed by autodoc's :members:; numpydoc's own member tables
# would need autosummary stubs
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_theme_options = {"description": "Fast matrix multiplication on the CPU",
                      "fixed_sidebar": True}
exclude_patterns = ["_build"]


def setup(app):
    # the Performance page's PNGs, from docs/figures/*.json, before reading
    app.connect("builder-inited",
                lambda app: plot_figures.main(os.path.join(here, "figures"),
                                              os.path.join(here, "_generated")))
