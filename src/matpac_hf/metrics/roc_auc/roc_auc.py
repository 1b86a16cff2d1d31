# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Area under the ROC curve for multi-label classification, computed with numpy.

A local `evaluate` module (works offline): `evaluate.load("<path to>/metrics/roc_auc")`.
"""

import evaluate
import numpy as np

from matpac_hf.metrics.common import MULTI_LABEL_FEATURES, average_over_classes, metric_info


_DESCRIPTION = """
ROC-AUC of one class is the probability that a random positive clip scores higher than a random negative clip (ties
count one half), computed exactly from average ranks (Mann-Whitney U statistic); it equals scikit-learn's
`roc_auc_score`. "macro" averages the per-class AUCs over the classes that have both positive and negative
references (AUC is undefined otherwise and those classes are left out). "micro" pools every (clip, class) pair.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): scores of shape (num_clips, num_classes).
    references (`list` of `list` of `int`): multi-hot targets of shape (num_clips, num_classes), 0 or 1.
    average (`str`, defaults to `"macro"`): `"macro"`, `"micro"` or `"none"` (per-class list, NaN where undefined).
Returns:
    roc_auc (`float`, or `list` of `float` with `average="none"`).
Example:
    >>> metric = evaluate.load("src/matpac_hf/metrics/roc_auc")
    >>> metric.compute(predictions=[[0.9, 0.1], [0.2, 0.8], [0.6, 0.7]], references=[[1, 0], [0, 1], [0, 1]])
    {'roc_auc': 1.0}
"""


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` (num_items,), tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    group_starts = np.r_[0, np.nonzero(np.diff(sorted_values))[0] + 1]  # first index of each run of ties
    group_ends = np.r_[group_starts[1:], sorted_values.size]  # one past the last index
    group_rank = (group_starts + 1 + group_ends) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(group_rank, group_ends - group_starts)
    return ranks


def binary_roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """AUC of one class: `scores` and 0/1 `targets` of shape (num_clips,). NaN without positives or negatives."""
    num_positives = targets.sum()
    num_negatives = targets.size - num_positives
    if num_positives == 0 or num_negatives == 0:
        return float("nan")
    positive_rank_sum = average_ranks(scores)[targets == 1].sum()
    return float((positive_rank_sum - num_positives * (num_positives + 1) / 2.0) / (num_positives * num_negatives))


class RocAuc(evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, MULTI_LABEL_FEATURES)

    def _compute(self, predictions, references, average="macro"):
        return average_over_classes(
            "roc_auc",
            binary_roc_auc,
            predictions,
            references,
            average,
            undefined_message="No class has both positive and negative references: ROC-AUC is undefined.",
        )
