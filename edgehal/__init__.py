"""edgehal: hierarchical-auxiliary-learning models from PyTorch training to the edge."""

from edgehal.errors import EdgehalError

__version__ = "0.1.0"

__all__ = ["EdgehalError", "__version__"]
