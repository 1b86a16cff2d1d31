"""End-to-end clip-embedding throughput (waveform in, clip embedding out) of MatpacModel against the official
"precise" inference loop, on the three shapes of issue 11, in one run with alternating rounds.

For each shape (8 clips x 30 s, 1 clip x 30 s, 32 clips x 2 s) and each round, every variant runs once, in turn:

* `official fp32`: the official code's way (tests/official_reference.py): the torchaudio-style front end on the
  batch, then one encoder call per chunk index with all clips of the batch stacked (`forward_precise`);
* `project fp32`: MatpacFeatureExtractor + MatpacModel (micro-batched chunks of equal length, the default);
* `project int8`: the same after `matpac_hf.inference.quantize_linear_layers_int8` (torch dynamic int8);
* `project onnx int8`: `matpac_hf.onnx_inference.OnnxMatpacModel` (the encoder core exported to ONNX, int8 with
  onnxruntime's dynamic quantisation, run by onnxruntime; chunking as MatpacModel), where onnxruntime is installed
  (`pip install "matpac-hf[onnx]"`); the export and quantisation times are printed once, before the timed rounds;
* `project bf16 autocast`: only where bf16 is native (`native_bf16_support`); skipped where it is emulated;
* `project torch.compile` (with `--compile`): fp32, compile time reported.

Each round also times a large fp32 GEMM, the machine's attainable fp32 rate. Printed: median seconds of audio per
second, the median of the per-round speed ratios against `official fp32` (the machines are shared: a ratio within a
round is steadier than an absolute time), the fraction of the GEMM rate reached (exact FLOPs of the tokens encoded;
ViT-B: about 5.58 GFLOP per second of audio), and cosine / max abs diff of the clip embeddings against official fp32.
With `--probe`, a linear probe compares fp32, torch int8 and onnx int8 on the three real-audio tasks of
`examples/real_audio_corpus.py` (digits, instruments, drums; built once into `--corpus_dir` from Debian packages,
shared with bench_pretraining_real_audio.py): the same condition folds and seeds for every variant, per-task
accuracies and the paired differences (int8 - fp32) with their 95 % CIs. Where the corpus cannot be built it falls
back to a small synthetic task (logistic regression, 5-fold CV; one clip is 0.5 points).

    python benchmarks/bench_inference.py                      # 3 rounds, all three shapes (~15 min on 2 cores)
    python benchmarks/bench_inference.py --rounds 5 --probe   # the issue's table plus the probe check
    python benchmarks/bench_inference.py --shapes 32x2 --rounds 1   # quick check
    python benchmarks/bench_inference.py --threads 1 --clock cpu    # a crowded machine: CPU time of one thread
    python benchmarks/bench_inference.py --onnx_dir /tmp/matpac-onnx  # keep the ONNX export for the next run
    python benchmarks/bench_inference.py --threads 1 --clock cpu --breakdown  # plus where project fp32's time goes
"""

import argparse
import atexit
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # official_reference: the independent re-implementation of the official code
sys.path.insert(0, str(REPO / "examples"))  # the probe: real_audio_corpus, run_linear_probe, demo_corpus
sys.path.insert(0, str(REPO / "benchmarks"))  # bench_pretraining_real_audio: its real-audio tasks and probe

from bench_machine import describe_cpu  # noqa: E402
from official_reference import OfficialMatpac, official_mel_filters, randomize_  # noqa: E402

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacModel  # noqa: E402
from matpac_hf.configuration_matpac import num_frames_for_samples  # noqa: E402
from matpac_hf.convert_original_checkpoint import map_encoder  # noqa: E402
from matpac_hf.inference import native_bf16_support, quantize_linear_layers_int8  # noqa: E402


SHAPES = {"8x30": (8, 30.0), "1x30": (1, 30.0), "32x2": (32, 2.0)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds (medians are reported).")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--no_int8", action="store_true", help="Skip the torch int8 variant.")
    parser.add_argument("--no_onnx", action="store_true", help="Skip the onnx int8 variant.")
    parser.add_argument(
        "--onnx_dir",
        default=None,
        help="Folder for the ONNX export of the onnx int8 variant, reused when it holds this model's export (default: "
        "a temporary folder, removed at exit, so the export is timed every run).",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="Per shape, profile one project fp32 run: the share of its time each part takes (GEMMs, attention, "
        "softmax, GELU, LayerNorm, copies, front end, the rest), their rates, and the ceiling without copies/overhead.",
    )
    parser.add_argument("--compile", action="store_true", help="Also time torch.compile (fp32; compile time shown).")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="Linear probe fp32 vs torch int8 vs onnx int8 on the real-audio tasks of examples/real_audio_corpus.py "
        "(built when missing; without its Debian packages, a small synthetic task).",
    )
    parser.add_argument("--probe_seeds", type=int, nargs="+", default=[0, 1], help="Probe seeds (averaged per fold).")
    parser.add_argument(
        "--corpus_dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "matpac_hf", "real_audio_corpus"),
        help="The real-audio corpus (shared with bench_pretraining_real_audio.py; built once, reused).",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="'cpu': time.process_time, steadier than wall time on a crowded machine; use it with --threads 1 (with "
        "more threads, waiting threads' spinning counts as work).",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------------
# FLOPs and the GEMM rate
# ----------------------------------------------------------------------------------------------------------------------


FLOP_PARTS = ("patch embedding", "block matrix products", "attention products")


def encoder_flop_split(config: MatpacConfig, chunk_time_patches: list[int]) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of the encoder on chunks of these column counts, by part (`FLOP_PARTS`): the
    patch embedding, the four matrix products of every block (qkv, output projection, fc1, fc2) and the two inside
    attention (scores, weighted values)."""
    hidden, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    split = dict.fromkeys(FLOP_PARTS, 0.0)
    for columns in chunk_time_patches:
        patches = config.num_frequency_patches * columns
        seq = 1 + patches
        split["patch embedding"] += 2 * patches * config.patch_size**2 * hidden
        split["block matrix products"] += layers * 2 * seq * (4 * hidden * hidden + 2 * hidden * inter)
        split["attention products"] += layers * 4 * seq * seq * hidden
    return split


def chunk_columns(config: MatpacConfig, num_frames: int) -> list[int]:
    columns = []
    for start in range(0, num_frames, config.max_frames):
        columns.append(-(-min(config.max_frames, num_frames - start) // config.patch_size))
    return columns


def gemm_rate(size=(4096, 768, 3072), repeats: int = 5, clock=time.perf_counter) -> float:
    """Best fp32 GFLOP/s of an (m, k) @ (k, n) product over `repeats` runs (shapes of ViT-B's MLP)."""
    m, k, n = size
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        torch.mm(a, b, out=out)
        best = min(best, clock() - start)
    return 2 * m * k * n / best / 1e9


# Where the time of `project fp32` goes (`--breakdown`): the profiler's self time of each aten op, by part. The FLOPs
# of the first three parts are `encoder_flop_split`'s; sdpa's flash kernel (chunks under
# matpac_hf.fast_inference.PER_CHUNK_ATTENTION_MIN_TOKENS tokens) includes its softmax.
BREAKDOWN_OPS = {
    "patch embedding": ("aten::mkldnn_convolution", "aten::convolution_overrideable", "aten::_convolution"),
    "block matrix products": ("aten::addmm", "aten::addmm_", "aten::mm"),
    "attention products": ("aten::baddbmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu"),
    "softmax": ("aten::_softmax",),
    "GELU": ("aten::gelu_", "aten::gelu"),
    "LayerNorm": ("aten::native_layer_norm",),
    "bias copies, residual adds": ("aten::copy_", "aten::add_", "aten::add"),
}
# The parts a transformer block cannot do without, each at the rate its kernel reaches inside the model.
ESSENTIAL_PARTS = ("patch embedding", "block matrix products", "attention products", "softmax", "GELU", "LayerNorm")


def time_breakdown(model, feature_extractor, waveforms, flop_split: dict, gemm: float, clock) -> None:
    """Print where one `project fp32` run's time goes: the front end timed with `clock`, then the model under
    torch.profiler, also timed, its ops' self time grouped by `BREAKDOWN_OPS`; the rest of the model's time is
    `everything else` (small ops, Python, and the profiler's own overhead). For the parts with FLOPs, their rate as a
    share of `gemm`. Last, the share of the GEMM rate it would reach if only `ESSENTIAL_PARTS` took time, at the rates
    they reach in the model: the ceiling of removing every copy and all overhead, with these kernels."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        start = clock()
        features = feature_extractor(waveforms, sampling_rate=16000, return_tensors="pt")["input_values"]
        front_end = clock() - start
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            start = clock()
            model(features)
            model_time = clock() - start
    self_seconds = {event.key: event.self_cpu_time_total / 1e6 for event in profiler.key_averages()}
    parts = {name: sum(self_seconds.get(op, 0.0) for op in ops) for name, ops in BREAKDOWN_OPS.items()}
    parts["everything else (small ops, Python, profiler)"] = max(0.0, model_time - sum(parts.values()))
    parts["front end (feature extractor)"] = front_end
    total, flops = front_end + model_time, sum(flop_split.values())
    print(f"  where project fp32's time goes (one profiled run, {total:.2f} s):")
    for name, seconds in parts.items():
        line = f"    {name:<46} {100 * seconds / total:5.1f} % of the time"
        if flop_split.get(name):
            rate = flop_split[name] / seconds / 1e9
            line += (
                f", {100 * flop_split[name] / flops:5.1f} % of the FLOPs, {100 * rate / gemm:5.1f} % of the GEMM rate"
            )
        print(line)
    essential = sum(parts[name] for name in ESSENTIAL_PARTS)
    print(
        f"    ceiling: {100 * flops / essential / 1e9 / gemm:.1f} % of the GEMM rate if only "
        f"{', '.join(ESSENTIAL_PARTS)} took time",
        flush=True,
    )


# ----------------------------------------------------------------------------------------------------------------------
# The official way: batched front end, one encoder call per chunk index over all clips
# ----------------------------------------------------------------------------------------------------------------------


class OfficialPipeline:
    def __init__(self, model: OfficialMatpac):
        self.model = model
        self.filters = official_mel_filters()
        self.window = torch.hann_window(400)

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(
            waveforms,
            n_fft=400,
            hop_length=160,
            win_length=400,
            window=self.window,
            center=False,
            return_complex=True,
        )
        mel = torch.matmul(spectrum.abs().pow(2.0).transpose(-1, -2), self.filters).transpose(-1, -2)
        return (torch.log(mel + torch.finfo(torch.float32).eps) + 7.056) / 4.193  # (B, 80, frames)

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            emb, _ = self.model.forward_precise(self.log_mel(waveforms))
            return emb.mean(dim=1)


def project_pipeline(model, feature_extractor, autocast_dtype=None):
    def run(waveforms: torch.Tensor) -> torch.Tensor:
        with (
            torch.no_grad(),
            torch.autocast("cpu", dtype=autocast_dtype or torch.bfloat16, enabled=bool(autocast_dtype)),
        ):
            features = feature_extractor(waveforms, sampling_rate=16000, return_tensors="pt")
            return model(features["input_values"]).pooler_output.float()

    return run


def onnx_int8_model(model: MatpacModel, onnx_dir: str | None):
    """`OnnxMatpacModel` (int8) for `model`, printing the export, quantisation and session times (once, outside the
    timed rounds); None where onnxruntime / onnxscript are not installed."""
    missing = [name for name in ("onnxruntime", "onnxscript", "onnx") if importlib.util.find_spec(name) is None]
    if missing:
        print(f'onnx int8 skipped: {", ".join(missing)} not installed (pip install "matpac-hf[onnx]")', flush=True)
        return None
    from matpac_hf.onnx_inference import OnnxMatpacModel, ensure_onnx_export

    if onnx_dir is None:  # a fresh folder, removed at exit (430 MB for ViT-B)
        onnx_dir = tempfile.mkdtemp(prefix="matpac-onnx-")
        atexit.register(shutil.rmtree, onnx_dir, ignore_errors=True)
    timings = []
    for label, step in (
        ("export (fp32)", lambda: ensure_onnx_export(model, onnx_dir, int8=False)),
        ("int8 quantisation", lambda: ensure_onnx_export(model, onnx_dir, int8=True)),
        ("session", lambda: OnnxMatpacModel.from_model(model, onnx_dir=onnx_dir, int8=True)),
    ):
        start = time.perf_counter()
        result = step()
        timings.append(f"{label} {time.perf_counter() - start:.1f} s")
    print(f"onnx int8: {', '.join(timings)} (wall; a cached export takes ~0 s) in {onnx_dir}", flush=True)
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Linear probe: the real-audio tasks (else a small synthetic task)
# ----------------------------------------------------------------------------------------------------------------------


def real_audio_tasks(corpus_dir: str) -> dict | None:
    """The labelled tasks (digits, instruments, drums) of `examples/real_audio_corpus.py` in `corpus_dir`, built there
    (cached) when missing and the Debian packages are installed; None where they are not."""
    import real_audio_corpus
    from bench_pretraining_real_audio import TASKS, load_task

    if not all(os.path.isfile(os.path.join(corpus_dir, "tasks", task, "metadata.csv")) for task in TASKS):
        if not real_audio_corpus.is_available():
            print(
                f"\nthe real-audio corpus is not in {corpus_dir} and cannot be built here (apt-get install "
                f"{real_audio_corpus.DEBIAN_PACKAGES}): the probe falls back to the synthetic task",
                flush=True,
            )
            return None
        print(f"\nbuilding the real-audio corpus in {corpus_dir} (once, cached)", flush=True)
        real_audio_corpus.build_real_audio_corpus(corpus_dir)
    return {task: load_task(corpus_dir, task) for task in TASKS}


def real_audio_probe(models: dict, feature_extractor, tasks: dict, seeds) -> None:
    """Linear probe (`run_linear_probe.cross_validate` over each task's condition folds, as
    bench_pretraining_real_audio) of every model's clip embeddings, the same folds and seeds for all: per-task
    accuracies and the paired differences against fp32 over folds, with 95 % CIs."""
    from bench_pretraining_real_audio import grouped_probe
    from run_linear_probe import embed_waveforms, summarise

    per_fold = {name: {} for name in models}  # name -> task -> per-fold test accuracy (%)
    for task_name, task in tasks.items():
        for name, model in models.items():
            embeddings = embed_waveforms(model, feature_extractor, task["waveforms"], batch_size=16)
            per_fold[name][task_name] = 100 * np.array(grouped_probe(embeddings, task, seeds))
    for name in models:  # every fold of every task, pooled
        per_fold[name]["all tasks"] = np.concatenate([per_fold[name][task_name] for task_name in tasks])

    def cell(values, signed=False) -> str:
        summary = summarise(list(values))
        ci = summary["ci95"] if summary["ci95"] is not None else float("nan")
        return f"{summary['mean']:{'+' if signed else ''}.2f} +- {ci:.2f}"

    names = list(models)
    print(
        f"\nlinear probe on real audio (random ViT-B; accuracy %, mean over folds +- 95 % CI; seeds {list(seeds)}; "
        "differences paired over folds)"
    )
    print(
        "| task | clips | folds | " + " | ".join(names) + " | " + " | ".join(f"{n} - fp32" for n in names[1:]) + " |"
    )
    print("| --- " * (3 + 2 * len(names) - 1) + "|")
    clips = {task_name: len(task["waveforms"]) for task_name, task in tasks.items()}
    clips["all tasks"] = sum(clips.values())
    for task_name in clips:
        reference = per_fold["fp32"][task_name]
        cells = [cell(per_fold[name][task_name]) for name in names]
        cells += [cell(per_fold[name][task_name] - reference, signed=True) for name in names[1:]]
        print(f"| {task_name} | {clips[task_name]} | {len(reference)} | " + " | ".join(cells) + " |")


def synthetic_probe_accuracy(pipelines: dict, seed: int) -> dict[str, float]:
    from demo_corpus import DEMO_CLASSES, synthesize_sound
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    clips, labels = [], []
    for index in range(40 * len(DEMO_CLASSES)):  # 40 clips of 2 s per class, loud background noise: not trivial
        kind = DEMO_CLASSES[index % len(DEMO_CLASSES)]
        clip = synthesize_sound(kind, 2.0, 16000, rng) + 0.3 * rng.standard_normal(32000)
        clips.append(clip.astype(np.float32))
        labels.append(index % len(DEMO_CLASSES))
    waveforms = torch.from_numpy(np.stack(clips))
    labels = np.array(labels)
    results = {}
    for name, run in pipelines.items():
        embeddings = torch.cat([run(waveforms[i : i + 32]) for i in range(0, len(waveforms), 32)]).numpy()
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
        results[name] = 100 * float(np.mean(cross_val_score(probe, embeddings, labels, cv=folds)))
    return results


# ----------------------------------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"CPU: {describe_cpu()}; timing: {args.clock} clock", flush=True)
    config = MatpacConfig()  # ViT-B
    official = randomize_(OfficialMatpac(), seed=args.seed)
    model = MatpacModel(config).eval()
    state = official.state_dict()
    model.load_state_dict({ours: state[name] for name, ours in map_encoder(state).items()}, strict=False)
    feature_extractor = MatpacFeatureExtractor()
    print(
        f"ViT-B ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, random weights), "
        f"{model.default_chunk_batch_size()} chunks per encoder call, attention {config._attn_implementation}",
        flush=True,
    )

    variants = {
        "official fp32": OfficialPipeline(official),
        "project fp32": project_pipeline(model, feature_extractor),
    }
    quantized = None if args.no_int8 else quantize_linear_layers_int8(model)
    if quantized is not None:
        variants["project int8"] = project_pipeline(quantized, feature_extractor)
    onnx_model = None if args.no_onnx else onnx_int8_model(model, args.onnx_dir)
    if onnx_model is not None:
        variants["project onnx int8"] = project_pipeline(onnx_model, feature_extractor)
    native_bf16, reason = native_bf16_support("cpu")
    if native_bf16:
        variants["project bf16 autocast"] = project_pipeline(model, feature_extractor, torch.bfloat16)
    else:
        print(f"bf16 autocast skipped: {reason} (emulated bf16 is slower than fp32)", flush=True)
    if args.compile:
        compiled = torch.compile(model, dynamic=False)
        variants["project torch.compile"] = project_pipeline(compiled, feature_extractor)

    rng = np.random.default_rng(args.seed)
    table = []
    for shape in args.shapes:
        num_clips, seconds = SHAPES[shape]
        waveforms = torch.from_numpy((0.1 * rng.standard_normal((num_clips, int(seconds * 16000)))).astype(np.float32))
        audio_seconds = num_clips * seconds
        num_frames = num_frames_for_samples(waveforms.shape[1])
        flop_split = encoder_flop_split(config, chunk_columns(config, num_frames))
        flop_split = {part: num_clips * value for part, value in flop_split.items()}
        flops = sum(flop_split.values())
        times = {name: [] for name in variants}
        gemm = []
        embeddings = {}
        for name, run in variants.items():  # warm-up (and torch.compile's compile) outside the timed rounds
            start = time.perf_counter()
            embeddings[name] = run(waveforms)
            if name == "project torch.compile":
                print(f"[{shape}] torch.compile warm-up (compile) {time.perf_counter() - start:.1f} s", flush=True)
        for round_index in range(args.rounds):
            gemm.append(gemm_rate(clock=clock))
            order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
            for name in order:
                start = clock()
                variants[name](waveforms)
                times[name].append(clock() - start)
        gemm_median = statistics.median(gemm)
        print(
            f"\n[{shape}] {num_clips} x {seconds:g} s, {flops / audio_seconds / 1e9:.2f} GFLOP per audio second, "
            f"fp32 GEMM {gemm_median:.0f} GFLOP/s (median of {args.rounds}; range {min(gemm):.0f}-{max(gemm):.0f})",
            flush=True,
        )
        reference = embeddings["official fp32"]
        for name in variants:
            ratios = [o / t for o, t in zip(times["official fp32"], times[name])]
            throughput = audio_seconds / statistics.median(times[name])
            fraction = statistics.median(flops / t / 1e9 / g for t, g in zip(times[name], gemm))
            cosine = torch.nn.functional.cosine_similarity(embeddings[name], reference, dim=-1).min().item()
            diff = (embeddings[name] - reference).abs().max().item()
            print(
                f"  {name:<24} {throughput:7.1f} s audio/s  x{statistics.median(ratios):.2f} vs official  "
                f"{100 * fraction:5.1f} % of GEMM rate  cosine {cosine:.6f}  max abs diff {diff:.1e}",
                flush=True,
            )
            table.append((shape, name, throughput, statistics.median(ratios), fraction, cosine))
        if args.breakdown:
            time_breakdown(model, feature_extractor, waveforms, flop_split, gemm_median, clock)

    print("\n| shape | variant | s audio / s | vs official fp32 | fraction of fp32 GEMM rate | min cosine |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape, name, throughput, ratio, fraction, cosine in table:
        print(f"| {shape} | {name} | {throughput:.1f} | {ratio:.2f}x | {100 * fraction:.0f} % | {cosine:.6f} |")

    if args.probe:
        probe_models = {"fp32": model}
        if quantized is not None:
            probe_models["torch int8"] = quantized
        if onnx_model is not None:
            probe_models["onnx int8"] = onnx_model
        tasks = real_audio_tasks(args.corpus_dir)
        if tasks is not None:
            real_audio_probe(probe_models, feature_extractor, tasks, args.probe_seeds)
        else:
            accuracy = synthetic_probe_accuracy(
                {name: project_pipeline(m, feature_extractor) for name, m in probe_models.items()}, args.seed
            )
            print(
                "\nlinear probe (5 synthetic classes x 40 clips of 2 s, 5-fold CV, random ViT-B; one clip is 0.5 "
                "points): " + ", ".join(f"{name} {value:.1f} %" for name, value in accuracy.items())
            )


if __name__ == "__main__":
    main()
