"""Compiled extensions built from the Cython sources in _native/ (see gateway.native)."""
