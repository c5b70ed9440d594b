"""Positive controls: small settings where a working memory is known to succeed and no memory cannot.

`associative_retrieval` trains lch's RMT from scratch on the RMT paper's synthetic task; `cramming`
optimises one text's memory through a method's read path. `benchmarks/` runs them at full size.
"""
