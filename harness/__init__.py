"""The lch engine: models, sweeps, the runner, the results store. Knows no specific method or task."""
