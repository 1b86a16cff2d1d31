# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""examples/run_pretraining.py's schedule line: the epoch length, or why it is unknown (never "None")."""

import run_pretraining  # examples/ is on pytest's pythonpath (setup.cfg)


def test_schedule_log_names_the_epoch_length_or_why_it_is_unknown():
    known = {"corpus_size": 200, "steps_per_epoch": 12}
    assert run_pretraining.describe_epochs(known) == "steps per epoch: 12 (corpus of 200 clips)"
    streamed = run_pretraining.describe_epochs({"corpus_size": None, "steps_per_epoch": None})
    assert "None" not in streamed and "--corpus_size" in streamed
