"""LongBench v1: `build` (records, prompts, truncation), `metrics` (official metrics), `task` (the registered task)."""
