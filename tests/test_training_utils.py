# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""matpac_hf.training_utils on its own (one process): atomic, rotated checkpoints and their resume, the stop on
SIGINT / SIGTERM, the JSON-lines tracker's truncation, the thread count. tests/test_run_pretraining.py runs them inside
the pretraining script (crash during a save, signals, a 2-process launch)."""

import json
import os
import signal
import types

import pytest
import torch

from matpac_hf import training_utils
from matpac_hf.training_utils import (
    JsonlTracker,
    StopRequest,
    check_replicas_in_sync,
    checkpoint_steps,
    choose_num_threads,
    find_latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def accelerated():
    """A prepared Linear + SGD on CPU; accelerate's process-wide state is reset afterwards."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    yield accelerator, model
    AcceleratorState._reset_state(reset_partial_state=True)


def test_save_rotate_and_load(tmp_path, accelerated):
    accelerator, model = accelerated
    saved = {}
    for step in (2, 4, 6):
        with torch.no_grad():
            model.weight.fill_(float(step))
        extra = (lambda folder: open(os.path.join(folder, "extra.txt"), "w").close()) if step == 6 else None
        path = save_checkpoint(accelerator, str(tmp_path), step, {"global_step": step, "data": [step]}, 2, extra)
        saved[step] = path
    # the oldest beyond total_limit=2 deleted; only complete folders, no temporary one left
    assert checkpoint_steps(str(tmp_path)) == [4, 6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert (tmp_path / "checkpoint-6" / "extra.txt").is_file() and not (
        tmp_path / "checkpoint-4" / "extra.txt"
    ).exists()
    marker = json.loads((tmp_path / "checkpoint-6" / "checkpoint_complete.json").read_text())
    assert marker == {"global_step": 6, "num_processes": 1}
    assert resolve_checkpoint("latest", str(tmp_path)) == saved[6] == find_latest_checkpoint(str(tmp_path))

    with torch.no_grad():
        model.weight.zero_()
    state = load_checkpoint(accelerator, saved[4])
    assert state == {"global_step": 4, "data": [4]}
    assert torch.all(model.weight == 4.0)


def test_incomplete_checkpoints_are_never_resumed(tmp_path, accelerated, monkeypatch):
    accelerator, _ = accelerated
    assert resolve_checkpoint("latest", str(tmp_path)) is None  # nothing yet: start from scratch
    assert resolve_checkpoint(None, str(tmp_path)) is None
    save_checkpoint(accelerator, str(tmp_path), 3, {"global_step": 3}, 0)

    class Killed(BaseException):
        pass

    def killed(*args):
        raise Killed

    monkeypatch.setattr(training_utils, "mark_checkpoint_complete", killed)
    with pytest.raises(Killed):  # killed before the marker: only the temporary folder exists
        save_checkpoint(accelerator, str(tmp_path), 5, {"global_step": 5}, 0)
    assert (tmp_path / ".tmp-checkpoint-5").is_dir() and not (tmp_path / "checkpoint-5").exists()
    (tmp_path / "checkpoint-9").mkdir()  # a folder without a marker (e.g. written by accelerate itself)
    assert checkpoint_steps(str(tmp_path)) == [3]
    assert checkpoint_steps(str(tmp_path), complete_only=False) == [3, 9]
    assert resolve_checkpoint("latest", str(tmp_path)) == str(tmp_path / "checkpoint-3")
    with pytest.raises(ValueError, match="checkpoint-9' is not a complete checkpoint folder"):
        resolve_checkpoint(str(tmp_path / "checkpoint-9"), str(tmp_path))
    os.remove(tmp_path / "checkpoint-3" / "training_state_rank0.pt")
    with pytest.raises(ValueError, match="no training state for process 0.*same number of processes"):
        load_checkpoint(accelerator, str(tmp_path / "checkpoint-3"))


def test_stop_request_sets_a_flag_and_restores_the_handlers(accelerated):
    accelerator, model = accelerated
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested(accelerator, 1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested(accelerator, 1) and stop.signal_number == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    assert check_replicas_in_sync(accelerator, model, os.devnull)  # one process: trivially in sync


def test_several_processes_agree_on_a_stop_every_check_every_steps_only():
    """The cross-process agreement (an all-reduce read on the host) runs at steps divisible by `check_every`; the
    steps in between keep no host synchronisation for it."""
    reduced = []

    def reduce(tensor, reduction):
        reduced.append(float(tensor))
        return tensor * 2  # two processes: this one's flag and an identical one

    accelerator = types.SimpleNamespace(num_processes=2, device="cpu", reduce=reduce)
    with StopRequest(check_every=4) as stop:
        assert not any(stop.requested(accelerator, step) for step in (1, 2, 3, 4))
        os.kill(os.getpid(), signal.SIGTERM)
        assert [stop.requested(accelerator, step) for step in (5, 6, 7, 8)] == [False, False, False, True]
    assert reduced == [0.0, 1.0]  # at steps 4 and 8 only


def test_jsonl_tracker_truncates_the_steps_after_a_resume(tmp_path):
    tracker = JsonlTracker("run", str(tmp_path))
    tracker.store_init_configuration({"learning_rate": 1e-3})
    for step in (1, 2, 3, 4):
        tracker.log({"loss": 1.0 / step}, step=step)
    tracker.truncate_after(2)
    tracker.log({"loss": 0.3}, step=3)
    tracker.finish()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row["loss"]) for row in rows] == [(1, 1.0), (2, 0.5), (3, 0.3)]
    assert json.loads((tmp_path / "run_config.json").read_text()) == {"learning_rate": 1e-3}


def test_thread_counts(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(training_utils, "available_cores", lambda: 2)
    assert choose_num_threads(None, 1, 1)[0] == 1  # 2 cores: the decoding worker gets one
    assert choose_num_threads(None, 0, 1)[0] == 2
    assert choose_num_threads(3, 1, 1) == (3, "--num_threads")
    monkeypatch.setattr(training_utils, "available_cores", lambda: 16)
    assert choose_num_threads(None, 2, 2)[0] == 6  # 8 cores per process, 2 of them for the workers
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert choose_num_threads(None, 2, 2) == (4, "OMP_NUM_THREADS")
