"""BABILong qa1-qa5: `build` (bAbI samples, official prompts, PG19 test books), `metrics` (official scoring), `task`."""
