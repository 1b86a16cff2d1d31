# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Mean average precision (mAP) for multi-label classification, computed with numpy.

A local `evaluate` module (works offline): `evaluate.load("<path to>/metrics/mean_average_precision")`.
"""

import evaluate
import numpy as np

from matpac_hf.metrics.common import MULTI_LABEL_FEATURES, average_over_classes, metric_info


_DESCRIPTION = """
Average precision (AP) of one class summarises its precision-recall curve as the mean of the precisions at each
threshold, weighted by the increase in recall: AP = sum_n (R_n - R_{n-1}) P_n, with one threshold per distinct score
(tied scores form one step). This is the definition of scikit-learn's `average_precision_score` (no interpolation).

mAP ("macro") is the mean of the per-class APs over the classes that have at least one positive reference: AP is
undefined for a class without positives, and such classes are left out (as in the usual AudioSet / FSD50K
evaluations). "micro" pools every (clip, class) pair into one binary problem.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): scores of shape (num_clips, num_classes), e.g. sigmoid outputs or
        logits (only the order of scores within a class matters).
    references (`list` of `list` of `int`): multi-hot targets of shape (num_clips, num_classes), 0 or 1.
    average (`str`, defaults to `"macro"`): `"macro"` (mean over classes with positives), `"micro"` (all pairs
        pooled) or `"none"` (per-class list, NaN for classes without positives).
Returns:
    mean_average_precision (`float`, or `list` of `float` with `average="none"`).
Example:
    >>> metric = evaluate.load("src/matpac_hf/metrics/mean_average_precision")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8], [0.6, 0.7]], references=[[1, 0], [0, 1], [0, 1]])
    {'mean_average_precision': 1.0}
"""


def binary_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """AP of one class: `scores` and 0/1 `targets` of shape (num_clips,). NaN when there is no positive."""
    num_positives = targets.sum()
    if num_positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    true_positives = np.cumsum(targets[order])  # (num_clips,)
    # One threshold per distinct score: keep the last position of each run of tied scores.
    threshold_ends = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]
    true_positives = true_positives[threshold_ends]
    predicted_positives = threshold_ends + 1
    precision = true_positives / predicted_positives
    recall = true_positives / num_positives
    recall_steps = np.diff(np.r_[0.0, recall])
    return float((recall_steps * precision).sum())


class MeanAveragePrecision(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, MULTI_LABEL_FEATURES)

    def _compute(self, predictions, references, average="macro"):
        return average_over_classes(
            "mean_average_precision",
            binary_average_precision,
            predictions,
            references,
            average,
            undefined_message="No class has a positive reference: mAP is undefined.",
        )
