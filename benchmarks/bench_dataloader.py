# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Pretraining throughput on CPU: the streaming crop pipeline, and (optionally) training steps.

Part 1 (always): builds a local corpus of FLAC clips stored as webdataset tar shards (default 200 clips of 10 s, one in
four at 44.1 kHz stereo, the rest 16 kHz mono), then measures random 6.08 s crops per second through the real pipeline
(`datasets` streaming -> soundfile decode -> mono -> soxr resample -> crop -> batches) in the training process and with
1 and 2 DataLoader workers, per CPU core doing the decoding, and where the time of one crop goes (raw stream reading,
decode, down-mix, resample, the rest; measured by wrapping those functions here, the library has no timing hooks).
Then it prepares the same corpus with `matpac_hf.prepare_corpus` and prints the preparation speed (audio hours per
core-minute), the disk per audio hour (prepared int16 PCM, the source FLAC, float16 log-mel for comparison, and how
far a stored float16 log-mel crop is from the log-mel of the waveform crop), a line beginning `prepared corpus:` with
the crops/s per core read from it through the real DataLoader path (`PretrainingDataLoop`, 608-frame crops), and the
cores that feed an 8 x H100 `base` run at the README's paper throughput from each input path. Rates per core are
crops per CPU second of every process doing the work (the training process and its DataLoader workers).

Part 2 (`--train`): training steps per second of the `tiny` and `base` presets of `examples/run_pretraining.py` on CPU,
model FLOPs per step (counted with `torch.utils.flop_counter.FlopCounterMode`, plus the ops its table lacks: sdpa's CPU
flash kernels and the in-place `addmm_`) and the achieved fraction of this machine's measured fp32 and bf16 GEMM rate
(`--clock cpu`: CPU time of the process, for a crowded machine, with one thread).

    python benchmarks/bench_dataloader.py                      # data pipeline only (about a minute)
    python benchmarks/bench_dataloader.py --train              # + training steps of the tiny and base presets
    OMP_NUM_THREADS=1 python benchmarks/bench_dataloader.py --train --skip_data --presets base --clock cpu
    python benchmarks/bench_dataloader.py --threads            # + tiny-preset runs: default threads vs torch's

Part 3 (`--threads`): steps per second of real `run_pretraining.py` runs of the tiny preset on the demo corpus (one
decoding worker, batch 32) with the script's default thread count (the process's cores minus one per decoding
worker) against torch's own default (every core, the worker then competing with the training threads), alternated
`--thread_repeats` times. Set nothing in OMP_NUM_THREADS for this part (the script respects it).
"""

import argparse
import contextlib
import io
import os
import resource
import sys
import tarfile
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

from matpac_hf import audio_io
from matpac_hf.audio_io import decode_audio, decode_random_crop
from matpac_hf.configuration_matpac import SAMPLING_RATE, num_samples_for_frames
from matpac_hf.prepare_corpus import prepare_corpus
from matpac_hf.pretraining_data import CROP_FRAMES, PretrainingDataLoop, build_crop_stream, load_audio_stream


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from demo_corpus import DEMO_CLASSES, synthesize_sound  # noqa: E402


CROP_SAMPLES = num_samples_for_frames(CROP_FRAMES)


TARGET_CROPS_PER_SECOND_PER_CORE = 300
PREPARED_GOAL_CROPS_PER_SECOND_PER_CORE = 5000
# README: `base` on 8 x H100 SXM at 35 % MFU runs the official schedule (294 816 steps x 2048 crops) in 5.4 h
PAPER_CROPS_PER_SECOND = 31_000


def pretraining_step(
    model,
    optimizer,
    trainable,
    feature_extractor,
    waveforms,
    index,
    max_grad_norm,
    autocast_dtype=None,
    generator=None,
    ema_model=None,
):
    """One optimiser step of run_pretraining.py's loop without accelerate (also used by bench_gpu.py): log-mel on the
    waveforms' device, forward (under autocast when `autocast_dtype` is given), backward, EMA teachers, gradient
    clipping, optimiser step. `ema_model`: the model whose teachers are updated, when `model` wraps it (e.g.
    `torch.compile(model)`)."""
    with torch.autocast(
        waveforms.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
    ):
        outputs = model(feature_extractor.extract_log_mel(waveforms), step=index, generator=generator)
    outputs.loss.backward()
    (ema_model or model).update_teachers(index)
    torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _flac_member(name: str, clip: np.ndarray, sampling_rate: int) -> tuple[tarfile.TarInfo, io.BytesIO]:
    buffer = io.BytesIO()
    sf.write(buffer, clip.astype(np.float32), sampling_rate, format="FLAC")
    data = buffer.getvalue()  # not tell(): libsndfile seeks back to finish the FLAC header
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def build_shard_corpus(folder: str, num_clips: int, num_shards: int, seconds: float, seed: int = 0) -> list[str]:
    """Writes `num_clips` FLAC clips into `num_shards` webdataset tars; returns the tar paths."""
    rng = np.random.default_rng(seed)
    paths = [os.path.join(folder, f"shard-{shard:04d}.tar") for shard in range(num_shards)]
    tars = [tarfile.open(path, "w") for path in paths]
    for index in range(num_clips):
        hifi = index % 4 == 3  # one in four: 44.1 kHz stereo
        sampling_rate = 44_100 if hifi else 16_000
        clip = synthesize_sound(DEMO_CLASSES[index % len(DEMO_CLASSES)], seconds, sampling_rate, rng)
        if hifi:
            clip = np.stack([clip, 0.8 * clip + 0.01 * rng.standard_normal(clip.shape[0])], axis=1)
        tars[index % num_shards].addfile(*_flac_member(f"clip{index:06d}.flac", clip, sampling_rate))
    for tar in tars:
        tar.close()
    return paths


def cpu_seconds_of_tree() -> float:
    """CPU seconds of this process, its finished children and its live ones (DataLoader workers)."""
    import psutil

    used = sum(
        getattr(resource.getrusage(who), field)
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        for field in ("ru_utime", "ru_stime")
    )
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            used += times.user + times.system
    return used


def measure_pipeline(num_workers: int, num_crops: int, batch_size: int = 16, **source) -> tuple[float, float]:
    """`(crops per wall second, crops per CPU second of all processes)` through `PretrainingDataLoop` (the first
    batch excluded: worker start-up)."""
    dataset, column = load_audio_stream(**source)
    loop = PretrainingDataLoop(
        build_crop_stream(dataset, column, seed=0), batch_size=batch_size, num_workers=num_workers
    )
    iterator = iter(loop)
    next(iterator)
    start, start_cpu, crops = time.perf_counter(), cpu_seconds_of_tree(), 0
    while crops < num_crops:
        crops += next(iterator)["input_values"].shape[0]
    return crops / (time.perf_counter() - start), crops / (cpu_seconds_of_tree() - start_cpu)


@contextlib.contextmanager
def timed_calls(totals: dict, targets: dict):
    """Wraps `getattr(owner, name)` for every `part: [(owner, name), ...]` of `targets` so that the wall seconds spent
    in it are added to `totals[part]` (nested calls counted once), and restores them afterwards."""
    originals, depth = [], {"level": 0}
    for part, pairs in targets.items():
        for owner, name in pairs:
            function = getattr(owner, name)

            def timed(*args, _function=function, _part=part, **kwargs):
                depth["level"] += 1
                start = time.perf_counter()
                try:
                    return _function(*args, **kwargs)
                finally:
                    depth["level"] -= 1
                    if depth["level"] == 0:
                        totals[_part] = totals.get(_part, 0.0) + time.perf_counter() - start

            originals.append((owner, name, function))
            setattr(owner, name, timed)
    try:
        yield totals
    finally:
        for owner, name, function in reversed(originals):
            setattr(owner, name, function)


def breakdown(shards, num_crops: int) -> dict:
    """Seconds per crop spent reading the raw stream, decoding, down-mixing, resampling, and the rest (in-process)."""
    dataset, column = load_audio_stream(data_files=shards)
    start, count = time.perf_counter(), 0
    for _ in dataset:  # raw examples only: tar reading + datasets overhead
        count += 1
        if count >= num_crops:
            break
    raw = (time.perf_counter() - start) / count
    stream = build_crop_stream(dataset, column, seed=0)
    targets = {
        "decode (open, seek, read)": [(sf.SoundFile, "__init__"), (sf.SoundFile, "seek"), (sf.SoundFile, "read")],
        "down-mix": [(audio_io, "to_mono")],
        "resample": [(audio_io, "resample")],
    }
    with timed_calls({}, targets) as totals:
        start, count = time.perf_counter(), 0
        for _ in stream:
            count += 1
            if count >= num_crops:
                break
        total = (time.perf_counter() - start) / count
    per_crop = {name: seconds / count for name, seconds in totals.items()}
    per_crop["stream reading"] = raw
    per_crop["other (keys, crop, checks, python)"] = max(0.0, total - sum(per_crop.values()))
    per_crop["total"] = total
    return per_crop


def measure_gemm_tflops(
    dtype: torch.dtype, size: int = 2048, min_seconds: float = 1.0, clock=time.perf_counter
) -> float:
    """Square GEMM rate in TFLOP/s. A 512 probe comes first: CPUs without native bf16 (no AVX512-BF16 / AMX) run bf16
    matmuls hundreds of times slower than fp32, and a 2048 GEMM would then take a minute."""
    probe = torch.randn(512, 512, dtype=dtype)
    probe @ probe
    start = time.perf_counter()
    probe @ probe
    probe_rate = 2 * 512**3 / (time.perf_counter() - start) / 1e12
    if probe_rate < 0.01:
        return probe_rate
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    start, repeats = clock(), 0
    while clock() - start < min_seconds:
        a @ b
        repeats += 1
    return 2 * size**3 * repeats / (clock() - start) / 1e12


def run_data_benchmark(args):
    print(f"torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        shards = build_shard_corpus(folder, args.num_clips, args.num_shards, args.clip_seconds)
        print(
            f"corpus: {args.num_clips} FLAC clips of {args.clip_seconds:.0f} s in {args.num_shards} webdataset "
            f"shards (1/4 at 44.1 kHz stereo), built in {time.perf_counter() - start:.1f} s"
        )
        target = TARGET_CROPS_PER_SECOND_PER_CORE
        print(f"crop: {CROP_SAMPLES} samples ({CROP_FRAMES} frames); target {target} crops/s/core\n")
        results = {}
        for num_workers in (0, 1, 2):
            rate, cpu_rate = measure_pipeline(num_workers, args.num_crops, data_files=shards)
            results[num_workers] = cpu_rate
            where = "in the training process" if num_workers == 0 else f"{num_workers} DataLoader worker(s)"
            print(f"  {where:28s}: {rate:7.1f} crops/s  = {cpu_rate:6.1f} crops/s/core (per CPU second)")
        parts = breakdown(shards, args.num_crops)
        print("\nwhere the time of one crop goes (in-process, mixed corpus):")
        for name, seconds in parts.items():
            print(f"  {name:36s} {seconds * 1e3:6.2f} ms  ({seconds / parts['total'] * 100:5.1f} %)")
        single = {}
        for label, rate, stereo in (("16 kHz mono", 16_000, False), ("44.1 kHz stereo", 44_100, True)):
            single[label] = _single_format_rate(rate, stereo, args)
        rates = ", ".join(f"{k}: {v:.0f} crops/s" for k, v in single.items())
        print(f"\ndecode_random_crop alone, per format: {rates}")
        print(downmix_comparison())
    run_prepared_benchmark(args, flac_rate=results[1])


def run_prepared_benchmark(args, flac_rate: float):
    """Prepares a corpus like the FLAC one but with `--prepared_clips` clips (so that the timed crops fit in one epoch:
    DataLoader workers start again every epoch), then reads crops from it through the real DataLoader path."""
    import logging

    logging.getLogger("matpac_hf").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        shards = build_shard_corpus(folder, args.prepared_clips, args.num_shards, args.clip_seconds, seed=1)
        _run_prepared_benchmark(args, folder, shards, flac_rate)


def _run_prepared_benchmark(args, folder: str, shards: list[str], flac_rate: float):
    prepared = os.path.join(folder, "prepared")
    provenance = prepare_corpus(prepared, data_files=shards, num_shards=args.num_shards)
    hours, cpu_seconds = provenance["audio_hours"], provenance["cpu_seconds"]
    print(
        f"\npreparation (python -m matpac_hf.prepare_corpus, 1 process): {hours / (cpu_seconds / 60):.3f} audio hours "
        f"per core-minute ({provenance['clips_written']} clips, {hours * 60:.1f} min of audio in {cpu_seconds:.1f} CPU "
        "s; mixed corpus, 1/4 decoded from 44.1 kHz stereo and resampled)"
    )
    flac_bytes = sum(os.path.getsize(path) for path in shards)
    print(
        f"disk per audio hour: prepared (int16 PCM in parquet) {provenance['bytes_per_audio_hour'] / 1e6:.1f} MB; "
        f"source FLAC tars {flac_bytes / hours / 1e6:.1f} MB (1/4 of the clips 44.1 kHz stereo); float16 log-mel "
        f"(80 bins x 100 frames/s) {80 * 100 * 2 * 3600 / 1e6:.1f} MB"
    )
    print(
        f"float16 log-mel instead: {float16_log_mel_error(shards[0]):.2e} max |difference| from the log-mel of the "
        "waveform crop (normalised log-mel units), and crops only on the 10 ms frame grid"
    )
    rates = {}
    num_crops = min(args.prepared_crops, args.prepared_clips - 4 * 16)  # within the first epoch
    for num_workers in (0, 1):
        rates[num_workers] = measure_pipeline(num_workers, num_crops, dataset_dir=prepared)
    goal = PREPARED_GOAL_CROPS_PER_SECOND_PER_CORE
    print(
        f"prepared corpus: {rates[1][1]:.0f} crops/s/core with 1 DataLoader worker, {rates[0][1]:.0f} crops/s/core in "
        f"the training process ({CROP_FRAMES}-frame crops, batch 16, crops per CPU second; wall {rates[1][0]:.0f} / "
        f"{rates[0][0]:.0f} crops/s; goal {goal})"
    )
    zstd = os.path.join(folder, "prepared_zstd")
    compressed = prepare_corpus(zstd, data_files=shards, num_shards=args.num_shards, compression="zstd")
    _, zstd_rate = measure_pipeline(0, num_crops, dataset_dir=zstd)
    print(
        f"with --compression zstd: {compressed['bytes_per_audio_hour'] / 1e6:.1f} MB per audio hour, {zstd_rate:.0f} "
        f"crops/s/core in the training process (uncompressed: {provenance['bytes_per_audio_hour'] / 1e6:.1f} MB, "
        f"{rates[0][1]:.0f})"
    )
    print(f"cores feeding an 8 x H100 base run at {PAPER_CROPS_PER_SECOND} crops/s (the README's paper throughput):")
    for name, rate in (("FLAC (mixed corpus, decode + resample)", flac_rate), ("prepared corpus", rates[1][1])):
        print(f"  {name:40s}: {PAPER_CROPS_PER_SECOND / rate:6.1f} cores ({rate:.0f} crops/s/core)")


def float16_log_mel_error(shard: str) -> float:
    """Largest |difference| between a stored float16 log-mel of whole clips, cropped on the frame grid, and the log-mel
    of the same waveform crop (the form this project does not store)."""
    import tarfile

    from matpac_hf import MatpacFeatureExtractor

    feature_extractor = MatpacFeatureExtractor()
    worst = 0.0
    with tarfile.open(shard) as tar:
        for member in tar.getmembers()[:4]:
            waveform = torch.from_numpy(decode_audio(tar.extractfile(member).read(), SAMPLING_RATE))[None]
            stored = feature_extractor.extract_log_mel(waveform).half().float()  # (1, frames, 80)
            first_frame = 37
            crop = waveform[:, first_frame * 160 : first_frame * 160 + CROP_SAMPLES]
            direct = feature_extractor.extract_log_mel(crop)
            worst = max(worst, float((stored[:, first_frame : first_frame + CROP_FRAMES] - direct).abs().max()))
    return worst


def downmix_comparison(rounds: int = 6, calls: int = 200) -> str:
    """CPU time of `audio_io.to_mono` on the stereo segment under one 44.1 kHz crop, against the matrix-vector product
    it replaced (which goes through BLAS and its threads), in alternating rounds (medians)."""
    frames = np.random.default_rng(0).standard_normal((int(CROP_SAMPLES * 44_100 / 16_000), 2)).astype(np.float32)
    weights = np.full(2, 0.5, dtype=np.float32)
    candidates = {"to_mono": lambda: audio_io.to_mono(frames), "BLAS product": lambda: frames @ weights}
    seconds = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, function in candidates.items():
            start = time.process_time()
            for _ in range(calls):
                function()
            seconds[name].append((time.process_time() - start) / calls)
    median = {name: sorted(values)[len(values) // 2] * 1e3 for name, values in seconds.items()}
    return (
        f"down-mix of {frames.shape[0]} stereo frames (one 44.1 kHz crop): to_mono {median['to_mono']:.3f} ms, the "
        f"BLAS matrix-vector product {median['BLAS product']:.3f} ms (CPU time, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )


def _single_format_rate(sampling_rate, stereo, args, num_clips=24):
    """Crops per second of `decode_random_crop` alone (no stream, no batching) on in-memory FLAC bytes of one
    format."""
    rng = np.random.default_rng(1)
    clips = []
    for index in range(num_clips):
        clip = synthesize_sound(DEMO_CLASSES[index % len(DEMO_CLASSES)], args.clip_seconds, sampling_rate, rng)
        if stereo:
            clip = np.stack([clip, 0.8 * clip + 0.01 * rng.standard_normal(clip.shape[0])], axis=1)
        buffer = io.BytesIO()
        sf.write(buffer, clip.astype(np.float32), sampling_rate, format="FLAC")
        clips.append(buffer.getvalue())
    start = time.perf_counter()
    for epoch in range(4):
        for index, data in enumerate(clips):
            decode_random_crop({"bytes": data, "path": None}, CROP_SAMPLES, epoch=epoch, key=str(index))
    return 4 * num_clips / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_clips", type=int, default=200, help="clips in the benchmark corpus")
    parser.add_argument("--num_shards", type=int, default=8, help="webdataset tar shards of the corpus")
    parser.add_argument("--clip_seconds", type=float, default=10.0, help="duration of each clip")
    parser.add_argument("--num_crops", type=int, default=400, help="crops timed per configuration")
    parser.add_argument("--prepared_clips", type=int, default=1200, help="clips of the corpus prepared for timing")
    parser.add_argument("--prepared_crops", type=int, default=1000, help="crops timed from the prepared corpus")
    parser.add_argument("--train", action="store_true", help="also time training steps of the tiny and base presets")
    parser.add_argument("--train_steps", type=int, default=3, help="timed training steps per preset (after 1 warm-up)")
    parser.add_argument("--batch_size", type=int, default=8, help="per-step batch for the training timing")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="Clock of the training timing and its GEMM rate: 'cpu' (time.process_time) is steadier on a crowded "
        "machine; use it with OMP_NUM_THREADS=1 (with more threads, waiting threads' spinning counts as work).",
    )
    parser.add_argument("--skip_data", action="store_true", help="with --train: skip the data-pipeline part")
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], help="presets timed by --train")
    parser.add_argument("--threads", action="store_true", help="only compare thread settings of real tiny runs")
    parser.add_argument("--thread_steps", type=int, default=20, help="optimiser steps per run of --threads")
    parser.add_argument("--thread_repeats", type=int, default=2, help="runs per setting of --threads (alternated)")
    args = parser.parse_args()
    if args.threads:
        run_thread_benchmark(args)
        return
    if not (args.train and args.skip_data):
        run_data_benchmark(args)
    if args.train:
        run_training_benchmark(args)


def run_thread_benchmark(args):
    """Steps/s of the demo's `run_pretraining.py --preset tiny` runs with the default thread choice vs torch's
    default."""
    import json
    import subprocess

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "run_pretraining_demo.py")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {"script default": [], f"torch default ({torch.get_num_threads()} threads)": []}
    settings_args = {
        "script default": [],
        f"torch default ({torch.get_num_threads()} threads)": ["--num_threads", str(torch.get_num_threads())],
    }
    with tempfile.TemporaryDirectory() as folder:
        corpus = os.path.join(folder, "corpus")  # built once by the first run, reused by the others
        for repeat in range(args.thread_repeats):
            for name, extra in settings_args.items():
                out = os.path.join(folder, f"run{repeat}_{len(settings[name])}_{name.split()[0]}")
                os.makedirs(out)
                if os.path.isdir(corpus):
                    os.symlink(corpus, os.path.join(out, "demo_corpus"))
                command = [sys.executable, script, "--preset", "tiny", "--output_dir", out, "--skip_demo_probe"]
                command += ["--max_steps", str(args.thread_steps), "--logging_steps", str(args.thread_steps)]
                command += ["--report_to", "jsonl", "--num_workers", "1", "--checkpointing_steps", "100000", *extra]
                result = subprocess.run(command, env=env, capture_output=True, text=True)
                if result.returncode != 0:
                    raise RuntimeError(result.stderr[-3000:])
                if not os.path.isdir(corpus):
                    os.rename(os.path.join(out, "demo_corpus"), corpus)
                with open(os.path.join(out, "logs", "metrics.jsonl")) as handle:
                    rows = [json.loads(line) for line in handle if '"loss"' in line]
                settings[name].append(rows[-1]["steps_per_second"])
                chosen = [line for line in result.stderr.splitlines() if "Threads:" in line]
                print(f"{name:28s} run {repeat + 1}: {rows[-1]['steps_per_second']:.3f} steps/s | {chosen[0][-150:]}")
    print(f"\ntiny preset, batch 32, 1 decoding worker, {args.thread_steps} steps, {cores} cores available:")
    for name, values in settings.items():
        print(f"  {name:28s}: {np.mean(values):.3f} steps/s (runs: {', '.join(f'{v:.3f}' for v in values)})")


def _load_pretraining_script():
    """The example script as a module (its presets and optimiser builder are what a real run uses)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "run_pretraining.py")
    spec = importlib.util.spec_from_file_location("run_pretraining", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _in_place_addmm_flop(self_shape, a_shape, b_shape, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def _cpu_flash_attention_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_flash_attention_backward_flop(grad_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


def model_flop_counter():
    """`FlopCounterMode` that also counts what torch's table lacks: the in-place `addmm_` of MatpacLayer's no-grad
    path (the teacher's output projections) and sdpa's CPU flash kernels, forward and backward (without them a
    `base` step's attention, ~3 % of its FLOPs, is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    return FlopCounterMode(
        display=False,
        custom_mapping={
            aten.addmm_: _in_place_addmm_flop,
            aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flop,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_attention_backward_flop,
        },
    )


def run_training_benchmark(args):
    from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacForPreTraining

    script = _load_pretraining_script()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    peak = {
        "fp32": measure_gemm_tflops(torch.float32, clock=clock),
        "bf16": measure_gemm_tflops(torch.bfloat16, clock=clock),
    }
    print(
        f"\nmeasured GEMM rate (2048^3, {torch.get_num_threads()} threads, {args.clock} clock): fp32 "
        f"{peak['fp32']:.3f} TFLOP/s, bf16 {peak['bf16']:.3f} TFLOP/s"
    )
    feature_extractor = MatpacFeatureExtractor()
    optimizer_args = script.build_parser().parse_args(
        ["--output_dir", "unused"]
    )  # the script's (official) optimiser defaults
    waveforms = torch.randn(args.batch_size, CROP_SAMPLES) * 0.1
    for preset in args.presets:
        torch.manual_seed(0)
        model = MatpacForPreTraining(MatpacConfig(**script.PRESETS[preset])).train()
        optimizer = script.build_optimizer(model, optimizer_args)
        trainable = [p for p in model.parameters() if p.requires_grad]

        def step(index, precision, model=model, optimizer=optimizer, trainable=trainable):
            pretraining_step(
                model,
                optimizer,
                trainable,
                feature_extractor,
                waveforms,
                index,
                optimizer_args.max_grad_norm,
                autocast_dtype=torch.bfloat16 if precision == "bf16" else None,
                generator=script.mask_generator(0, 0, index, 0),
            )

        with model_flop_counter() as counter:
            step(0, "fp32")
        flops = counter.get_total_flops()
        for precision in ("fp32", "bf16"):
            if peak[precision] < 0.5 * peak["fp32"]:
                slowdown = peak["fp32"] / peak[precision]
                print(
                    f"  {preset:4s} {precision}: skipped (this CPU's {precision} GEMM is {slowdown:.0f}x "
                    "slower than fp32: no native bf16 units)"
                )
                continue
            step(1, precision)  # warm-up
            start = clock()
            for index in range(args.train_steps):
                step(2 + index, precision)
            seconds = (clock() - start) / args.train_steps
            achieved = flops / seconds / 1e12
            print(
                f"  {preset:4s} {precision}: {1 / seconds:7.3f} steps/s ({seconds:6.2f} s/step, batch "
                f"{args.batch_size}), {flops / 1e9:8.1f} GFLOP/step (matmul/attention, fwd+bwd) -> "
                f"{achieved:.3f} TFLOP/s = {achieved / peak[precision] * 100:5.1f} % of the measured {precision} "
                "GEMM rate"
            )


if __name__ == "__main__":
    sys.exit(main())
