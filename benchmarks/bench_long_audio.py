"""Peak memory and time per audio second for long recordings (issue 11.1): 5 and 60 minutes through ViT-B in fp32.

Every case runs in its own subprocess (a fresh interpreter), so the peak resident set size (`ru_maxrss`) it reports
is that case's alone, for the whole process: Python, torch, the model, the waveform and the work. Cases:

* `feature extractor`: `MatpacFeatureExtractor()(audio)` on the whole file (log-mel of the whole file; the STFT runs
  block by block, `stft_block_frames`);
* `model, one call`: feature extractor, then one `MatpacModel` call on the whole log-mel (chunks in micro-batches of
  `chunk_batch_size`): the `(1, frames, 3840)` frame embeddings are the output and are materialised;
* `embed_long_audio`: `matpac_hf.inference.embed_long_audio`, window by window (97.28 s), keeping only the running
  clip embedding: the 60-minute target (peak under 1.5 GB, time per audio second within 10 % of 5 minutes).

The lengths are run in the order given and then the first one again, so time per audio second is compared with the
mean of two runs that surround the long one (the machines are shared; a ratio is steadier than a time). The child
also reports its RSS after loading the model and the audio (the floor the case starts from).

    python benchmarks/bench_long_audio.py                               # 5 and 60 min, all cases (~30 min, 2 cores)
    python benchmarks/bench_long_audio.py --minutes 1 3 --cases embed_long_audio   # quick check
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


CASES = ("feature extractor", "model, one call", "embed_long_audio")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[5.0, 60.0], help="Lengths of the recordings.")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads in every child.")
    parser.add_argument("--tiny", action="store_true", help="A 2-layer 32-wide encoder instead of ViT-B (smoke test).")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "MINUTES"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_child(case: str, minutes: float, tiny: bool, threads: int | None) -> dict:
    import numpy as np
    import torch

    from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacModel
    from matpac_hf.inference import embed_long_audio

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = (
        MatpacConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        if tiny
        else MatpacConfig()
    )
    model = MatpacModel(config).eval()
    feature_extractor = MatpacFeatureExtractor()
    num_samples = int(minutes * 60 * feature_extractor.sampling_rate)
    audio = np.random.default_rng(0).standard_normal(num_samples, dtype=np.float32)
    audio *= 0.1
    floor = rss_mb()
    start = time.perf_counter()
    with torch.no_grad():
        if case == "feature extractor":
            shape = tuple(feature_extractor(audio, sampling_rate=16000, return_tensors="pt")["input_values"].shape)
        elif case == "model, one call":
            input_values = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")["input_values"]
            shape = tuple(model(input_values).last_hidden_state.shape)
        else:
            shape = tuple(embed_long_audio(model, feature_extractor, audio, sampling_rate=16000).clip_embedding.shape)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"case": case, "minutes": minutes, "seconds": seconds, "peak_mb": peak, "floor_mb": floor, "shape": shape}


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        case, minutes = args.child[0], float(args.child[1])
        print(json.dumps(run_child(case, minutes, args.tiny, args.threads)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from bench_machine import describe_cpu

    print(f"CPU: {describe_cpu()}", flush=True)
    print(f"encoder: {'tiny (smoke test)' if args.tiny else 'ViT-B, fp32, random weights'}", flush=True)
    order = [*args.minutes, args.minutes[0]] if len(args.minutes) > 1 else list(args.minutes)
    results = {case: {} for case in args.cases}
    for minutes in order:
        for case in args.cases:
            command = [sys.executable, __file__, "--child", case, str(minutes)]
            command += ["--tiny"] if args.tiny else []
            command += ["--threads", str(args.threads)] if args.threads else []
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                print(f"{case}, {minutes:g} min: failed\n{completed.stderr[-2000:]}", flush=True)
                continue
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            results[case].setdefault(minutes, []).append(result)
            print(
                f"{case:<18} {minutes:5g} min: peak RSS {result['peak_mb']:7.0f} MB (after model + audio "
                f"{result['floor_mb']:.0f} MB), {1000 * result['seconds'] / (60 * minutes):7.2f} ms per audio "
                f"second ({result['seconds']:.1f} s), output {tuple(result['shape'])}",
                flush=True,
            )
    print("\n| case | minutes | peak RSS (MB) | ms per audio second | vs the shortest |")
    print("| --- | --- | --- | --- | --- |")
    shortest = min(args.minutes)
    for case, by_length in results.items():
        if shortest not in by_length:
            continue
        base = sum(r["seconds"] / (60 * shortest) for r in by_length[shortest]) / len(by_length[shortest])
        for minutes in args.minutes:
            if minutes not in by_length:
                continue
            per_second = sum(r["seconds"] / (60 * minutes) for r in by_length[minutes]) / len(by_length[minutes])
            peak = max(r["peak_mb"] for r in by_length[minutes])
            print(f"| {case} | {minutes:g} | {peak:.0f} | {1000 * per_second:.2f} | {per_second / base:.2f} |")


if __name__ == "__main__":
    main()
