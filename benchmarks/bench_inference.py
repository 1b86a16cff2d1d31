"""Clip-embedding throughput of MatpacModel (ViT-B, random weights) on long clips.

Prints seconds of audio embedded per wall-clock second for:

* the feature extractor alone (waveform -> log-mel);
* the batched precise forward (all chunks of all clips in one encoder call), fp32 and bf16 autocast;
* the official "precise" style: one encoder call per chunk, clip after clip, fp32 and bf16 autocast;

and the cosine similarity of bf16 vs fp32 clip embeddings.

    python benchmarks/bench_inference.py                 # 2 clips x 30 s: under 5 min on 2 CPU cores
    python benchmarks/bench_inference.py --num_clips 8   # 8 clips x 30 s

bf16 autocast only pays off where the CPU has bf16 matrix units (AMX / AVX512-BF16); without them it is emulated and
slower than fp32.
"""

import argparse
import time

import numpy as np
import torch

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacModel


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_clips", type=int, default=2, help="Clips per batch (8 for the 8 x 30 s case).")
    parser.add_argument("--seconds", type=float, default=30.0, help="Length of every clip in seconds.")
    parser.add_argument("--repeats", type=int, default=1, help="Timed runs per variant (the best one is reported).")
    parser.add_argument("--device", default="cpu", help="torch device (cpu or cuda).")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def best_time(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = function()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    autocast_dtype = torch.bfloat16

    config = MatpacConfig()  # official ViT-B sizes
    model = MatpacModel(config).to(device).eval()
    feature_extractor = MatpacFeatureExtractor()
    rng = np.random.default_rng(args.seed)
    num_samples = int(args.seconds * config.sampling_rate)
    audio = [0.1 * rng.standard_normal(num_samples).astype(np.float32) for _ in range(args.num_clips)]
    total_seconds = args.num_clips * args.seconds
    print(
        f"MatpacModel ViT-B ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters), random weights, "
        f"{args.num_clips} clips x {args.seconds:g} s on {device}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}",
        flush=True,
    )

    seconds, features = best_time(
        lambda: feature_extractor(audio, sampling_rate=config.sampling_rate, return_tensors="pt"), args.repeats
    )
    input_values = features["input_values"].to(device)  # (clips, frames, 80)
    num_frames = input_values.shape[1]
    num_chunks = -(-num_frames // config.max_frames)
    print(
        f"log-mel: {tuple(input_values.shape)}, {num_chunks} chunks of <= {config.max_frames} frames per clip",
        flush=True,
    )
    print(f"{'feature extractor':<42} {total_seconds / seconds:10.1f} s audio / s  ({seconds:.2f} s)", flush=True)

    def batched():
        with torch.no_grad():
            return model(input_values).pooler_output.float()

    def per_chunk():
        """Official precise style: one encoder call per chunk, clip after clip, then concatenate along time."""
        embeddings = []
        with torch.no_grad():
            for clip in input_values:
                frames = [
                    model(clip[None, start : start + config.max_frames]).last_hidden_state
                    for start in range(0, num_frames, config.max_frames)
                ]
                embeddings.append(torch.cat(frames, dim=1).mean(dim=1).float())
        return torch.cat(embeddings)

    results = {}
    with torch.no_grad():  # warm-up (one short clip) so that one-off costs are not timed
        model(input_values[:1, : config.max_frames])
        with torch.autocast(device.type, dtype=autocast_dtype):
            model(input_values[:1, : config.max_frames])
    for name, function in (("batched precise", batched), ("one chunk per call (official loop)", per_chunk)):
        for precision in ("fp32", "bf16 autocast"):
            if precision == "fp32":
                seconds, embeddings = best_time(function, args.repeats)
            else:
                with torch.autocast(device.type, dtype=autocast_dtype):
                    seconds, embeddings = best_time(function, args.repeats)
            results[(name, precision)] = embeddings
            label = f"{name}, {precision}"
            print(f"{label:<42} {total_seconds / seconds:10.1f} s audio / s  ({seconds:.2f} s)", flush=True)

    reference = results[("batched precise", "fp32")]
    for key, embeddings in results.items():
        cosine = torch.nn.functional.cosine_similarity(embeddings, reference, dim=-1)
        print(
            f"cosine vs batched fp32 clip embeddings, {key[0]}, {key[1]}: "
            f"min {cosine.min().item():.6f}, mean {cosine.mean().item():.6f}, "
            f"max abs diff {(embeddings - reference).abs().max().item():.2e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
