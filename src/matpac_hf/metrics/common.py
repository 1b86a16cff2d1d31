# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""What the metric modules share: their `MetricInfo` and the per-class averaging of the multi-label metrics."""

from collections.abc import Callable

import datasets
import evaluate
import numpy as np


# Scores (num_clips, num_classes) and multi-hot references of the same shape.
MULTI_LABEL_FEATURES = datasets.Features(
    {
        "predictions": datasets.Sequence(datasets.Value("float64")),
        "references": datasets.Sequence(datasets.Value("int64")),
    }
)


def metric_info(
    description: str, inputs_description: str, features: datasets.Features, citation: str = ""
) -> evaluate.MetricInfo:
    """The `MetricInfo` of one of the package's metric modules."""
    return evaluate.MetricInfo(
        description=description, citation=citation, inputs_description=inputs_description, features=features
    )


def average_over_classes(
    name: str,
    binary_metric: Callable[[np.ndarray, np.ndarray], float],
    predictions,
    references,
    average: str,
    undefined_message: str,
) -> dict:
    """`{name: value}` of a multi-label metric built from `binary_metric(scores, targets)` (one class, NaN where
    undefined): `"macro"` is the mean over the classes where it is defined, `"micro"` pools every (clip, class) pair,
    `"none"` gives the per-class list. Shapes and multi-hot references are checked."""
    scores = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(references, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            "predictions and references must both have shape (num_clips, num_classes); got "
            f"{scores.shape} and {targets.shape}."
        )
    if not np.isin(targets, (0.0, 1.0)).all():
        raise ValueError("references must be multi-hot (only 0 and 1).")
    if average == "micro":
        return {name: binary_metric(scores.ravel(), targets.ravel())}
    per_class = np.array([binary_metric(scores[:, k], targets[:, k]) for k in range(scores.shape[1])])
    if average == "none":
        return {name: per_class.tolist()}
    if average != "macro":
        raise ValueError(f"average must be 'macro', 'micro' or 'none', got {average!r}.")
    if np.isnan(per_class).all():
        raise ValueError(undefined_message)
    return {name: float(np.nanmean(per_class))}
