# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Run plumbing for training scripts built on 🤗 Accelerate (`examples/run_pretraining.py`): checkpoints written
atomically and rotated, resume from the newest complete one, a stop on SIGINT / SIGTERM that agrees over the
processes, a JSON-lines tracker that a resumed run continues (and its curves, with matplotlib), the thread count of
a training process, a check that the replicas of a distributed run ended identical, and `--config_overrides`
(parsed, and applied over a loaded `MatpacForPreTraining`).

A checkpoint is a folder `checkpoint-<step>` holding `accelerator.save_state` (model, optimizer, registered objects,
every process's random state), one `training_state_rank<i>.pt` per process (what the script passes: step counters,
stream position) and, written last, the completion marker `checkpoint_complete.json`. Only folders with the marker
count.

Rotation is done here, not by `ProjectConfiguration(total_limit=...)`: accelerate deletes the oldest checkpoint
*before* writing the new one into its final folder (no temporary folder, no completion marker), and `load_state()`
then picks the newest folder even when it is incomplete, so a kill during a save could leave no usable checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable

import torch
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import gather_object

from .configuration_matpac import MatpacConfig
from .modeling_matpac import MatpacForPreTraining


logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_MARKER = "checkpoint_complete.json"


def checkpoint_steps(output_dir: str, complete_only: bool = True) -> list[int]:
    """Steps of the `checkpoint-<step>` folders in `output_dir` (with their completion marker), sorted."""
    if not os.path.isdir(output_dir):
        return []
    steps = []
    for name in os.listdir(output_dir):
        if name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit():
            if not complete_only or os.path.isfile(os.path.join(output_dir, name, CHECKPOINT_MARKER)):
                steps.append(int(name[len(CHECKPOINT_PREFIX) :]))
    return sorted(steps)


def find_latest_checkpoint(output_dir: str) -> str | None:
    """The newest *complete* checkpoint (`checkpoint-<step>` with its completion marker), or None."""
    steps = checkpoint_steps(output_dir)
    return os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{steps[-1]}") if steps else None


def mark_checkpoint_complete(folder: str, step: int, num_processes: int):
    with open(os.path.join(folder, CHECKPOINT_MARKER), "w") as handle:
        json.dump({"global_step": step, "num_processes": num_processes}, handle)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str,
    step: int,
    training_state: dict,
    total_limit: int,
    write_extra: Callable[[str], object] | None = None,
) -> str:
    """Writes `checkpoint-<step>` atomically: everything goes to a temporary folder first (accelerate's state, this
    process's `training_state`, and on the main process `write_extra(folder)` when given), the main process adds the
    completion marker and renames the folder, then deletes the oldest checkpoints beyond `total_limit` (0 keeps
    all). A crash before the rename leaves only a `.tmp-...` folder that `find_latest_checkpoint` ignores. Every
    process calls it."""
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    temporary = os.path.join(output_dir, f".tmp-{CHECKPOINT_PREFIX}{step}")
    if accelerator.is_main_process and os.path.exists(temporary):
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    accelerator.save_state(temporary)
    torch.save(training_state, os.path.join(temporary, f"training_state_rank{accelerator.process_index}.pt"))
    if write_extra is not None and accelerator.is_main_process:
        write_extra(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        mark_checkpoint_complete(temporary, step, accelerator.num_processes)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(temporary, final)
        if total_limit > 0:
            for old in checkpoint_steps(output_dir, complete_only=False)[:-total_limit]:
                shutil.rmtree(os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{old}"), ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The folder to resume from: `'latest'` is the newest complete checkpoint in `output_dir` (None when there is
    none yet: the run starts from scratch), a path is checked for its completion marker; None for no resume."""
    if resume_from_checkpoint == "latest":
        checkpoint = find_latest_checkpoint(output_dir)
        if checkpoint is None:
            logger.info("--resume_from_checkpoint latest: no complete checkpoint yet, starting from scratch")
        return checkpoint
    if resume_from_checkpoint and not os.path.isfile(os.path.join(resume_from_checkpoint, CHECKPOINT_MARKER)):
        raise ValueError(f"{resume_from_checkpoint!r} is not a complete checkpoint folder (no {CHECKPOINT_MARKER}).")
    return resume_from_checkpoint or None


def load_checkpoint(accelerator: Accelerator, checkpoint: str) -> dict:
    """Loads a complete checkpoint into the prepared objects (`accelerator.load_state`) and returns this process's
    `training_state` as `save_checkpoint` received it."""
    accelerator.load_state(checkpoint)
    state_path = os.path.join(checkpoint, f"training_state_rank{accelerator.process_index}.pt")
    if not os.path.isfile(state_path):
        raise ValueError(
            f"{checkpoint} has no training state for process {accelerator.process_index}: it was written by a run "
            "with fewer processes; resume with the same number of processes."
        )
    return torch.load(state_path, weights_only=False)


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (what preemptible clusters send) set a flag that the training loop checks after
    every optimiser step, to write a checkpoint and stop; a second Ctrl-C raises KeyboardInterrupt at once. The
    previous handlers come back on exit. With several processes, `requested()` agrees over all of them (a signal seen
    by one of them stops them all at the same step) every `check_every` optimiser steps only: the agreement is an
    all-reduce read on the host, a synchronisation that steps in between do without."""

    def __init__(self, check_every: int = 10):
        self.check_every = check_every
        self.signal_number = None
        self._previous = {}

    def __enter__(self):
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number, frame):
        if self.signal_number is not None and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_number = number

    def requested(self, accelerator: Accelerator, step: int) -> bool:
        """Whether to stop after optimiser step `step` (1-based count of steps done)."""
        if accelerator.num_processes == 1:
            return self.signal_number is not None
        if step % self.check_every:
            return False
        flag = torch.tensor(float(self.signal_number is not None), device=accelerator.device)
        return accelerator.reduce(flag, reduction="sum").item() > 0


def init_decoding_worker(worker_id: int):
    """A DataLoader's `worker_init_fn` for audio-decoding workers: 1 torch thread (decoding is single-threaded; more
    threads only compete with the training process), and SIGINT / SIGTERM left to the training process, which stops
    the workers itself after writing its checkpoint (`StopRequest`; a worker killed by the signal would abort the run
    first)."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def truncate_jsonl(path: str, keep: Callable[[dict], bool]) -> None:
    """Rewrites a JSON-lines file with only the rows for which `keep(row)` is true (atomically)."""
    if not os.path.isfile(path):
        return
    with open(path) as handle:
        rows = [line for line in handle if line.strip() and keep(json.loads(line))]
    with open(path + ".tmp", "w") as handle:
        handle.writelines(rows)
    os.replace(path + ".tmp", path)


class JsonlTracker(GeneralTracker):
    """An accelerate tracker writing one JSON line per `log` call to `<logging_dir>/metrics.jsonl` (appending, so a
    resumed run continues the same file) and the run configuration to `<logging_dir>/run_config.json`."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str):
        super().__init__()
        self.run_name = run_name
        os.makedirs(logging_dir, exist_ok=True)
        self.logging_dir = logging_dir
        self.path = os.path.join(logging_dir, "metrics.jsonl")
        self.file = open(self.path, "a")

    @property
    def tracker(self):
        return self.file

    def store_init_configuration(self, values: dict):
        with open(os.path.join(self.logging_dir, "run_config.json"), "w") as handle:
            json.dump(values, handle, indent=2, sort_keys=True)

    def log(self, values: dict, step: int | None = None, **kwargs):
        self.file.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self.file.flush()

    def truncate_after(self, step: int):
        """Drops the rows of steps after `step` (logged before a crash, computed again after the resume from
        `step`)."""
        self.file.close()
        truncate_jsonl(self.path, lambda row: row.get("step") is None or row["step"] <= step)
        self.file = open(self.path, "a")

    def finish(self):
        self.file.close()


def plot_jsonl_metrics(metrics_path: str, png_path: str, panels: list[tuple[str, tuple[str, ...]]]) -> bool:
    """One panel per `(title, keys)` of the metrics against the step, from a `JsonlTracker` log (the last row of a
    step wins), saved as a PNG. False (and a warning) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning(f"matplotlib is not installed: no {os.path.basename(png_path)} (pip install matplotlib)")
        return False
    rows = {}
    with open(metrics_path) as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("step") is not None and any(key in row for _, keys in panels for key in keys):
                rows[row["step"]] = row
    steps = sorted(rows)
    num_columns = min(3, len(panels))
    figure, axes = plt.subplots(-(-len(panels) // num_columns), num_columns, figsize=(14, 7), squeeze=False)
    for axis, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            values = [rows[s].get(key) for s in steps]
            if any(v is not None for v in values):
                axis.plot(steps, values, label=key)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(png_path, dpi=90)
    plt.close(figure)
    return True


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_num_threads(requested: int | None, num_workers: int, processes_on_this_machine: int) -> tuple[int, str]:
    """Intra-op threads of a training process, and why: `requested`, else OMP_NUM_THREADS, else this process's share
    of the cores minus one core per decoding worker (each worker runs 1 thread). Oversubscription is what hurts on
    small machines (benchmarks/bench_dataloader.py --threads compares this choice with torch's default)."""
    if requested is not None:
        return requested, "--num_threads"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    share = max(1, available_cores() // max(1, processes_on_this_machine))
    return max(1, share - num_workers), f"{share} core(s) for this process - {num_workers} decoding worker(s)"


def check_replicas_in_sync(accelerator: Accelerator, model: torch.nn.Module, path: str) -> bool:
    """Whether every process holds the same weights and buffers: a checksum of `model.state_dict()` per process,
    gathered; the main process writes them to `path` (JSON list, one per process) and logs the verdict. Every
    process calls it."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    checksums = gather_object([digest.hexdigest()])
    in_sync = len(set(checksums)) == 1
    if accelerator.is_main_process:
        with open(path, "w") as handle:
            json.dump(checksums, handle)
        (logger.info if in_sync else logger.warning)(
            f"Model replicas identical across the {accelerator.num_processes} processes: {in_sync}"
        )
    return in_sync


def parse_config_overrides(text: str | None) -> dict:
    """'a=1,b=x' -> {'a': 1, 'b': 'x'} with values typed after MatpacConfig's defaults."""
    if not text:
        return {}
    defaults = MatpacConfig()
    overrides = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not hasattr(defaults, key):
            raise ValueError(f"--config_overrides item {item!r} is not 'field=value' with a MatpacConfig field.")
        default = getattr(defaults, key)
        if isinstance(default, bool):
            overrides[key] = value.strip().lower() in ("1", "true", "yes")
        elif isinstance(default, int):
            overrides[key] = int(value)
        elif isinstance(default, float):
            overrides[key] = float(value)
        else:
            overrides[key] = value.strip()
    return overrides


def apply_config_overrides(
    model: MatpacForPreTraining, overrides: dict, missing_keys, source: str
) -> MatpacForPreTraining:
    """`--config_overrides` (and `--use_mcl`) over a loaded model: the model rebuilt from the overridden config with
    the loaded weights. A field may change the shapes of parts the folder did not hold (e.g. the predictor's sizes or
    `use_mcl` over an encoder-only folder: those parts are new), never of loaded weights (found by building the model
    on the meta device); `teacher_init` cannot apply to trained teachers the folder holds (they are loaded, not
    initialised). What cannot apply is refused with a ValueError naming each field."""
    missing_keys = set(missing_keys)
    loaded = {name: tuple(t.shape) for name, t in model.state_dict().items() if name not in missing_keys}
    has_teachers = not any(name.startswith("teacher_") for name in missing_keys)
    refused = []
    for key, value in overrides.items():
        if getattr(model.config, key) == value:
            continue
        trial = copy.deepcopy(model.config)
        setattr(trial, key, value)
        with torch.device("meta"):
            trial_shapes = {name: tuple(t.shape) for name, t in MatpacForPreTraining(trial).state_dict().items()}
        changed = sorted(name for name in loaded if trial_shapes.get(name) != loaded[name])
        if changed:
            refused.append(f"{key}={value!r} changes loaded weights ({', '.join(changed[:3])}, ...)")
        elif key == "teacher_init" and has_teachers:
            refused.append(
                f"teacher_init={value!r}: {source} holds trained teachers, which are loaded, not initialised"
            )
    if refused:
        raise ValueError(
            f"--config_overrides / --use_mcl cannot apply to the model loaded from {source}: "
            + "; ".join(refused)
            + ". Start from scratch (no --model_name_or_path) to change them."
        )
    config = MatpacConfig.from_dict({**model.config.to_dict(), **overrides})  # validates the values
    rebuilt = MatpacForPreTraining(config)
    state = model.state_dict()
    rebuilt.load_state_dict({name: state[name] for name in loaded}, strict=False)
    if not has_teachers:
        rebuilt.copy_student_to_teachers()
    logger.info(f"Applied --config_overrides over {source}: {overrides}")
    return rebuilt
