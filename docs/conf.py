"""Sphinx configuration of the dsolo_sk documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html``. The build is
offline: there is no intersphinx (nothing is fetched), the gallery in
``examples/`` runs with model-free extractors, and matplotlib draws with
the Agg backend.
"""

import os
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# the package is installed in development mode by the README's set-up
# command; the path is only a fallback for a bare checkout
sys.path.insert(0, str(ROOT))

# the examples and the autodoc imports run torch on CPU: one thread keeps
# the build fast on a shared machine (OpenMP threads spin under contention)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# never reach for the network while building (model hubs stay offline)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import dsolo_sk  # noqa: E402

# -- project ------------------------------------------------------------------

project = "dsolo_sk"
author = "the dsolo_sk developers"
copyright = "2026, the dsolo_sk developers"
release = dsolo_sk.__version__
version = ".".join(release.split(".")[:2])

# -- general ------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store",
                    "auto_examples/*.ipynb", "auto_examples/*.py",
                    "auto_examples/*.zip", "auto_examples/*.json",
                    "sg_execution_times.rst"]
root_doc = "index"
default_role = "literal"
pygments_style = "sphinx"

# no intersphinx: the build must not touch the network, and inventories of
# numpy, scikit-learn, xarray... are not shipped with the project. External
# names therefore render as plain text.

# -- autodoc / autosummary / numpydoc ----------------------------------------

autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
# every class page lists its own methods (templates/autosummary/class.rst);
# numpydoc's automatic member tables would repeat scikit-learn's
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False
numpydoc_xref_param_type = False

# -- sphinx-gallery -----------------------------------------------------------


sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    # DSOLO_SK_DOCS_GALLERY=0 builds the gallery pages without running the
    # examples (tests/test_docs.py does, to check the rest of the build fast)
    "plot_gallery": os.environ.get("DSOLO_SK_DOCS_GALLERY", "1") != "0",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "backreferences_dir": "generated/backreferences",
    "doc_module": ("dsolo_sk",),
    "reference_url": {"dsolo_sk": None},
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "remove_config_comments": True,
    "download_all_examples": False,
    "within_subsection_order": "ExampleTitleSortKey",
    "show_memory": False,
    "write_computation_times": True,
    "min_reported_time": 1,
}

# the gallery imports matplotlib with a non-GUI backend; silence the
# warning that plt.show() emits under Agg
warnings.filterwarnings("ignore", category=UserWarning,
                        message="FigureCanvasAgg is non-interactive")
warnings.filterwarnings("ignore", category=UserWarning,
                        message="Matplotlib is currently using agg")

# -- HTML ---------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"dsolo_sk {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 7,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_context = {"default_mode": "light"}

# -- the synthetic benchmark's tables ----------------------------------------
# ``benchmarks/synthetic.py`` prints its tables to
# ``benchmarks/results/synthetic.txt``; the method page shows each table next
# to the choice it supports with ``.. synthetic-table:: PREFIX`` (every table
# whose title starts with PREFIX; no argument: the whole output).

from docutils import nodes  # noqa: E402
from docutils.parsers.rst import Directive  # noqa: E402

SYNTHETIC_RESULTS = ROOT / "benchmarks" / "results" / "synthetic.txt"


def _synthetic_blocks(text):
    """Split the printed output into (title, block text) pairs."""
    lines = text.splitlines()
    blocks, title, start = [], "", 0
    for k in range(1, len(lines)):
        line, prev = lines[k], lines[k - 1]
        if prev.strip() and set(line.strip()) == {"-"} and \
                len(line.strip()) >= 3:
            blocks.append((title, "\n".join(lines[start:k - 1]).strip("\n")))
            title, start = prev.strip(), k - 1
    blocks.append((title, "\n".join(lines[start:]).strip("\n")))
    return [(t, b) for t, b in blocks if b.strip()]


class SyntheticTable(Directive):
    optional_arguments = 1
    final_argument_whitespace = True
    has_content = False
    # ``:file: NAME``: another output kept in benchmarks/results/ (an
    # earlier round's full run, say) instead of synthetic.txt
    option_spec = {"file": str}

    def run(self):
        env = self.state.document.settings.env
        results = SYNTHETIC_RESULTS
        if "file" in self.options:
            results = SYNTHETIC_RESULTS.parent / self.options["file"]
        if not results.exists():
            para = nodes.paragraph(text=(
                "This table is printed by `python benchmarks/synthetic.py`, "
                "whose output goes to benchmarks/results/synthetic.txt; that "
                "file is not in this checkout."))
            return [para]
        env.note_dependency(str(results))
        text = results.read_text(encoding="utf-8")
        if not self.arguments:
            chosen = [text.rstrip("\n")]
        else:
            prefix = self.arguments[0].strip().lower()
            chosen = [b for t, b in _synthetic_blocks(text)
                      if t.lower().startswith(prefix)]
        if not chosen:
            return [nodes.paragraph(text=(
                f"(No table titled '{self.arguments[0]}...' in "
                "benchmarks/results/synthetic.txt; see the full output at "
                "the end of this page.)"))]
        out = []
        for block in chosen:
            lit = nodes.literal_block(block, block)
            lit["language"] = "text"
            out.append(lit)
        return out


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Leave scikit-learn's and the standard library's members to them.

    Class pages document inherited members (so TransportPathSegmenter shows
    fit and predict), but not the ones estimators get from scikit-learn
    (get_params, set_output, the metadata-routing setters...): their
    docstrings refer to scikit-learn's own documentation.
    """
    if what != "class":
        return None
    func = getattr(obj, "__func__", obj)
    owner = getattr(func, "__objclass__", None)  # builtin descriptors
    module = (getattr(owner, "__module__", None) if owner is not None
              else getattr(func, "__module__", None)) or ""
    if module.startswith(("sklearn", "collections", "builtins", "abc")):
        return True
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.add_directive("synthetic-table", SyntheticTable)
    app.connect("autodoc-skip-member", _skip_foreign_members)
