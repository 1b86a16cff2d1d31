#!/usr/bin/env python
# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Training steps of `torch.compile(MatpacForAudioClassification)` with clip lengths that change between batches:
the wall-clock and process CPU seconds of each step (a step that compiles includes the compile), next to the same step
in eager mode.

    OMP_NUM_THREADS=1 python benchmarks/bench_compile_training.py [--preset tiny|vit-b]

Batches of 2 clips: 2 s, 3 s, 4 s (one chunk each, the frame count turns dynamic at the second), 4 s with the second
clip padded (attention_mask), then 8 s (two chunks).
"""

import argparse
import sys
import time
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from matpac_hf import MatpacConfig, MatpacForAudioClassification  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "vit-b"], default="tiny")
    args = parser.parse_args()
    if args.preset == "tiny":
        from conftest import tiny_config

        config = tiny_config(num_labels=2, max_frames=608)
    else:
        config = MatpacConfig(num_labels=2)
    torch.manual_seed(0)
    eager = MatpacForAudioClassification(config).train()
    compiled_model = MatpacForAudioClassification(config).train()
    compiled_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(compiled_model)
    shapes = [(200, None), (300, None), (400, None), (400, 250), (800, None)]  # (frames, valid frames of clip 2)
    print(f"preset {args.preset}, torch threads {torch.get_num_threads()}")
    for model, name in ((eager, "eager"), (compiled, "compiled")):
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        for num_frames, valid in shapes:
            inputs = torch.randn(2, num_frames, 80, generator=generator)
            mask = None
            if valid is not None:
                mask = torch.ones(2, num_frames, dtype=torch.long)
                mask[1, valid:] = 0
            wall, cpu = time.perf_counter(), time.process_time()
            loss = model(inputs, attention_mask=mask, labels=torch.tensor([0, 1])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            padded = f", clip 2 padded to {valid}" if valid else ""
            print(f"{name}: {num_frames} frames{padded}: wall {wall:.1f} s, CPU {cpu:.1f} s, loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
