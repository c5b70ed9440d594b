"""Gradient fidelity of a trainable method's strategies against its exact one (UIO-LLMs paper, Table 4).

For each document, each strategy's gradient of all trainable parameters is compared with the
reference strategy's: cosine similarity, relative error ||g - g_ref|| / ||g_ref||, and the paper's
norm ratio r = ||g|| / ||g_ref||. Stochastic strategies run once per seed; the table gives mean and
standard deviation over documents and seeds.
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm import tqdm

from harness.core.errors import UserError


def _flat(gradients: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten().double() for _, g in sorted(gradients.items())])


def check_strategies(cls, strategies: list[str]) -> None:
    """Every name must be one of the method's strategies or named variants (one-line error otherwise)."""
    known = (*cls.TrainConfig.model_fields["strategy"].annotation.__args__, *getattr(cls, "STRATEGY_VARIANTS", {}))
    unknown = [s for s in strategies if s not in known]
    if unknown:
        raise UserError(f"unknown strategy '{unknown[0]}'. Valid: {', '.join(known)}")


def fidelity(
    method, documents: list[torch.Tensor], strategies: list[str], windows: list[int], seeds: int, progress=False
):
    """One row per (document, strategy, window, seed) with cosine, relative error and norm ratio.

    With `progress`, a bar counts the gradients computed (the reference of each document among them).
    """
    check_strategies(type(method), strategies)
    runs = [(s, w, seed) for s in strategies for w in windows
            for seed in range(seeds if s in method.STOCHASTIC_STRATEGIES else 1)]  # fmt: skip
    rows = []
    bar = tqdm(total=len(documents) * (len(runs) + 1), disable=not progress, unit="gradient", dynamic_ncols=True)
    with bar:
        for index, ids in enumerate(documents):
            reference = _flat(method.document_gradients(ids, method.REFERENCE_STRATEGY, window=1))
            bar.update()
            for strategy, window, seed in runs:
                gradient = _flat(method.document_gradients(ids, strategy, window, seed=seed))
                bar.update()
                rows.append({
                    "document": index, "strategy": strategy, "window": window, "seed": seed,
                    "cosine": float(torch.nn.functional.cosine_similarity(gradient, reference, dim=0)),
                    "relative_error": float((gradient - reference).norm() / reference.norm()),
                    "norm_ratio": float(gradient.norm() / reference.norm()),
                })  # fmt: skip
    return pd.DataFrame(rows)


def table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of each measure per strategy and window."""
    measures = ["cosine", "relative_error", "norm_ratio"]
    grouped = rows.groupby(["strategy", "window"], sort=False)[measures].agg(["mean", "std"]).fillna(0.0)
    grouped.columns = [f"{measure}_{stat}" for measure, stat in grouped.columns]
    grouped["runs"] = rows.groupby(["strategy", "window"], sort=False).size()
    return grouped.reset_index()
