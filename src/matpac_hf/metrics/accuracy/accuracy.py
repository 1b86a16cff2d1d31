# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Accuracy: the fraction of clips whose predicted class equals the reference class.

A local `evaluate` module (works offline): `evaluate.load("<path to>/metrics/accuracy")`.
"""

import datasets
import evaluate
import numpy as np

from matpac_hf.metrics.common import metric_info


_DESCRIPTION = """
Accuracy = number of correct predictions / number of predictions, for single-label classification. Predictions and
references are integer class indices. Optional `sample_weight` weights each clip.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted class index of each clip.
    references (`list` of `int`): true class index of each clip.
    normalize (`bool`, defaults to `True`): return the fraction of correct predictions; `False` returns their count
        (weighted count with `sample_weight`).
    sample_weight (`list` of `float`, *optional*): one weight per clip.
Returns:
    accuracy (`float`): in [0, 1] with `normalize=True`.
Example:
    >>> accuracy = evaluate.load("src/matpac_hf/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1])
    {'accuracy': 0.75}
"""


class Accuracy(evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION,
            _KWARGS_DESCRIPTION,
            datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        predictions = np.asarray(predictions)
        references = np.asarray(references)
        if predictions.size == 0:
            raise ValueError("accuracy needs at least one prediction; got none.")
        correct = (predictions == references).astype(np.float64)
        weights = np.ones_like(correct) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if weights.shape != correct.shape:
            raise ValueError(f"sample_weight has {weights.shape[0]} entries for {correct.shape[0]} predictions.")
        total = float((correct * weights).sum())
        return {"accuracy": total / float(weights.sum()) if normalize else total}
