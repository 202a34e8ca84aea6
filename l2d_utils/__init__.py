"""Shared library of the L2D-Clinical companion book.

"The paper" in this package's documentation is Kondadadi and Ortega,
*L2D-Clinical: Learning to Defer for Adaptive Model Selection in Clinical Text
Classification*, arXiv:2604.13285 (2026, CC BY 4.0).

Modules:

* :mod:`l2d_utils.config`: profiles (models and sizes) and folders.
* :mod:`l2d_utils.data`, :mod:`l2d_utils.splits`: ADE Corpus V2, splits, the duplicate-text leak.
* :mod:`l2d_utils.encoder`, :mod:`l2d_utils.models`: resumable fine-tuning; packaged model weights.
* :mod:`l2d_utils.llm`: prompt templates, the response cache, local and API backends.
* :mod:`l2d_utils.features`, :mod:`l2d_utils.deferral`, :mod:`l2d_utils.baselines`,
  :mod:`l2d_utils.metrics`: the deferral method and everything it is compared with.
* :mod:`l2d_utils.pipeline`: the cached steps that chapters call.
* :mod:`l2d_utils.book`: executes the chapters and builds the HTML book.
"""

__version__ = "0.1.0"
