"""Comparison reports built from a results store (see issue: reports)."""
