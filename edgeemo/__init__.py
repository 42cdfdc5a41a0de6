"""edgeemo: music emotion recognition (valence/arousal) on the edge.

The package root stays import-light: it only exposes the version and the error type.
Training lives in :mod:`edgeemo.train` (needs the ``[train]`` extra); the torch-free
runtime apps embed lives in :mod:`edgeemo.runtime`.
"""

from edgeemo.errors import EdgeemoError

__version__ = "0.1.0"

__all__ = ["EdgeemoError", "__version__"]
