"""lch's foundation: what every layer needs and nothing else of lch.

Errors the CLI prints in one line (`errors`), the typed registries (`registry`), checkpoint folders'
`training.json` (`checkpoint_files`), pydantic validation as one-line errors (`validation`) and where
lch keeps files (`paths`). Methods and tasks import this package and their own contracts, never another
engine module; nothing here imports the rest of lch (`tests/unit/test_consistency.py` checks both).
"""
