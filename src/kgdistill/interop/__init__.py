"""Bridges to other KGE libraries (optional extras): :mod:`kgdistill.interop.pykeen`."""
