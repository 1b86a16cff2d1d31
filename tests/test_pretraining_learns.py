"""MatpacForPreTraining learns: a short run of benchmarks/bench_pretraining_learns.py on synthetic structured log-mel.

The prediction loss must fall well below its starting value while the target std and the teacher perplexity stay away
from collapse (std -> 0, perplexity -> 1).
"""

import sys
from pathlib import Path

import pytest
import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_pretraining_learns import train  # noqa: E402


STEPS, BATCH_SIZE = 120, 16


@pytest.mark.slow
def test_prediction_loss_falls_without_collapse():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is fastest, and robust on a busy 2-core machine
    try:
        rows = train(steps=STEPS, batch_size=BATCH_SIZE, log_every=STEPS // 4)
    finally:
        torch.set_num_threads(threads)
    first, last = rows[0], rows[-1]
    assert last["prediction_loss"] < 0.6 * first["prediction_loss"], rows
    assert last["target_std"] > 0.5 * first["target_std"], rows
    assert last["teacher_perplexity"] > 4.0, rows
    assert last["num_teacher_classes"] >= 4, rows
