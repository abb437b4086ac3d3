"""Command-line entry points (`iqa-evaluate`, `iqa-train`): compose the Hydra config, then call the library.

The only package that imports Hydra. The configs are the repository's conf/ folder, installed as the package
data `iqa_saliency.conf`, so the commands work the same from a clone and from an installed wheel.
"""

CONFIG_PATH = "pkg://iqa_saliency.conf"

from . import sweep as _sweep  # noqa: E402,F401  (registers the resolver iqa_cell_dir that names sweep cells)
