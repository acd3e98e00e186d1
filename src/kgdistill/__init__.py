"""kgdistill: train, distil, evaluate and serve knowledge graph completion models."""

__version__ = "0.1.0"
