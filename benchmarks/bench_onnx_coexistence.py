#!/usr/bin/env python
# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Torch fp32 inference time while an `OnnxMatpacModel` exists in the process, and the ViT-B export time.

    python benchmarks/bench_onnx_coexistence.py [--threads 2] [--rounds 4] [--hidden_layers 12]

Exports a randomly initialised MATPAC encoder (ViT-B by default) to ONNX and int8 (printing both times), then times
one torch `model(...)` call on 8 clips of 6 s in alternating rounds: torch alone; after an onnxruntime session with
spinning worker threads (onnxruntime's default) ran once; after one with `session.intra_op.allow_spinning=0` (what
`matpac_hf.onnx_inference.create_session` sets) ran once. Wall-clock seconds, median per variant. First it prints the
process CPU time burnt while the process sleeps for 2 s right after one onnxruntime run (worker threads spinning).
"""

import argparse
import statistics
import tempfile
import time

import torch

from matpac_hf import MatpacConfig, MatpacModel
from matpac_hf.onnx_inference import OnnxMatpacModel, create_session


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--hidden_layers", type=int, default=12)
    parser.add_argument("--export_only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MatpacModel(MatpacConfig(num_hidden_layers=args.hidden_layers)).eval()
    inputs = torch.randn(8, 600, 80)
    with tempfile.TemporaryDirectory() as onnx_dir:
        torch.set_num_threads(1)
        start, cpu = time.perf_counter(), time.process_time()
        runner = OnnxMatpacModel.from_model(model, onnx_dir=onnx_dir, int8=False)
        export_seconds, export_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        runner = OnnxMatpacModel.from_model(model, onnx_dir=onnx_dir, int8=True)
        quantize_seconds, quantize_cpu = time.perf_counter() - start, time.process_time() - cpu
        print(
            f"export (1 torch thread): fp32 {export_seconds:.1f} s wall ({export_cpu:.1f} s CPU), then int8 "
            f"quantisation {quantize_seconds:.1f} s wall ({quantize_cpu:.1f} s CPU)"
        )
        if args.export_only:
            return
        torch.set_num_threads(args.threads)
        spinning = create_session(runner.onnx_path, args.threads, allow_spinning=True)
        quiet = create_session(runner.onnx_path, args.threads)
        feed = {spinning.get_inputs()[0].name: inputs[:2, :592].numpy()}

        def torch_call(session):
            if session is not None:
                session.run(None, feed)
            start = time.perf_counter()
            with torch.no_grad():
                model(inputs)
            return time.perf_counter() - start

        for session, name in ((spinning, "spinning session"), (quiet, "allow_spinning=0 session")):
            session.run(None, feed)
            cpu = time.process_time()
            time.sleep(2.0)
            print(f"{name}: {time.process_time() - cpu:.2f} s of process CPU in the 2 s of sleep after one run")
        torch_call(None)  # warm-up
        times = {"torch alone": [], "spinning session": [], "allow_spinning=0 session": []}
        for _ in range(args.rounds):
            times["torch alone"].append(torch_call(None))
            times["spinning session"].append(torch_call(spinning))
            times["allow_spinning=0 session"].append(torch_call(quiet))
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
