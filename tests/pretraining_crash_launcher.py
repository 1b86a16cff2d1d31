# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Test-only wrapper of examples/run_pretraining.py for launches in other processes (accelerate launch):
`--crash_after_step N` SIGKILLs each process right after step N is logged; every other argument goes to the script."""

import os
import signal
import sys

import run_pretraining  # examples/ is on the PYTHONPATH the test launches this with


def main(argv):
    crash_step = None
    if "--crash_after_step" in argv:
        index = argv.index("--crash_after_step")
        crash_step = int(argv[index + 1])
        argv = argv[:index] + argv[index + 2 :]
    log_metrics = run_pretraining.log_metrics

    def log_metrics_then_crash(accelerator, sums, num_micro_steps, extra, step, max_steps):
        means = log_metrics(accelerator, sums, num_micro_steps, extra, step, max_steps)
        if step == crash_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return means

    run_pretraining.log_metrics = log_metrics_then_crash
    return run_pretraining.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
