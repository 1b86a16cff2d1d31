# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""CPU time of one optimiser step over MatpacForPreTraining's trainable parameters: `FairseqAdam` (the official update
rule, examples/run_pretraining.py's default) against torch's fused AdamW (`--optimizer adamw`).

    python benchmarks/bench_optimizer.py --preset base --rounds 6

One torch thread; `time.process_time()`; the optimisers take turns within each round (the machine's load changes
between rounds), the first round is left out (allocation of the moments), and the median of the others is printed.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from matpac_hf import MatpacConfig, MatpacForPreTraining
from matpac_hf.optimization import FairseqAdam


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))  # run as a script: the example's presets
from run_pretraining import PRESETS  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="base")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of one step per optimiser (first left out)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MatpacForPreTraining(MatpacConfig(**PRESETS[args.preset]))
    parameters = [p for p in model.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter) * 1e-3
    settings = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.05)
    optimizers = {
        "FairseqAdam": FairseqAdam(parameters, **settings),
        "torch AdamW (fused)": torch.optim.AdamW(parameters, fused=True, **settings),
    }
    times = {name: [] for name in optimizers}
    for _ in range(args.rounds):
        for name, optimizer in optimizers.items():
            start = time.process_time()
            optimizer.step()
            times[name].append(time.process_time() - start)
    count = sum(p.numel() for p in parameters)
    print(f"preset {args.preset}: {count / 1e6:.1f} M trainable parameters in {len(parameters)} tensors, 1 thread")
    for name, values in times.items():
        rounds = ", ".join(f"{value:.3f}" for value in values)
        print(f"{name:>20}: {statistics.median(values[1:]):.3f} s CPU per step (rounds: {rounds})")


if __name__ == "__main__":
    main()
