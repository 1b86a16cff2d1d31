"""MatpacForPreTraining learns: a short run of benchmarks/bench_pretraining_learns.py on synthetic structured log-mel.

The prediction loss must fall well below its starting value while the target std and the teacher perplexity stay away
from collapse (std -> 0, perplexity -> 1).
"""

import pytest
import torch
from bench_pretraining_learns import train


STEPS, BATCH_SIZE = 150, 16  # the schedules (warm-ups, EMA and MATPAC++ anneals) scale with STEPS


@pytest.mark.slow
@pytest.mark.parametrize("use_mcl", [False, True], ids=["matpac", "matpac++"])
def test_prediction_loss_falls_without_collapse(use_mcl):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is fastest, and robust on a busy 2-core machine
    try:
        rows = train(steps=STEPS, batch_size=BATCH_SIZE, log_every=STEPS // 6, use_mcl=use_mcl)
    finally:
        torch.set_num_threads(threads)
    # The bounds leave a margin below what these 150 steps reach (the last row is the mean of steps 126-150;
    # `python benchmarks/bench_pretraining_learns.py` prints the whole curve): the losses fall, and the target std,
    # the teacher's perplexity and its number of distinct classes stay away from collapse.
    first, last = rows[0], rows[-1]
    assert last["prediction_loss"] < 0.35 * first["prediction_loss"], rows
    assert last["classification_loss"] < 0.7 * first["classification_loss"], rows
    assert last["target_std"] > 0.8 * first["target_std"], rows
    assert last["teacher_perplexity"] > 16.0, rows
    assert last["num_teacher_classes"] >= 12, rows
    assert last["student_teacher_agreement"] > 0.3 > first["student_teacher_agreement"], rows
