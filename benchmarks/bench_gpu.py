"""GPU throughput of MATPAC (issue 11.6): inference and pretraining on one CUDA device, ready to run when one is lent.

* inference: clip embeddings of 10 s clips (2 chunks each, end to end from the waveform with the feature extractor
  on the GPU) for batch sizes 1-64 in fp32, bf16 autocast and fp16 autocast, under the sdpa attention backend (the
  kernel sdpa picked is named), in clips per second and seconds of audio per second;
* pretraining (`base` = ViT-B, the official configuration): optimiser steps per second at a given batch size in bf16
  autocast (and fp32 with `--train_fp32`), the model FLOPs per step counted by `torch.utils.flop_counter`, and the MFU
  against the device's dense bf16 / fp32 peak (a table of known peaks by device name, or `--peak_tflops`), plus the
  measured GEMM rate of the device. The step is the one `bench_dataloader.pretraining_step` runs (log-mel, masking
  from the run's host-side generator, both encoders, losses, center, EMA teachers, clipping, the script's optimiser),
  checked for host synchronisation: one step runs under `torch.cuda.set_sync_debug_mode("error")` (CUDA) and under
  `HostSyncCheck` (any device: data-dependent ops such as `.item()`, `nonzero`, boolean indexing), and the script
  stops if either fires. `--compile` times the step with the model under `torch.compile` (fixed crop shapes) and
  reports the compile time.

Without CUDA it says so and exits 0. `--device cpu --tiny` runs every code path on the CPU with a tiny encoder (a smoke
test for this script, not a measurement).

    python benchmarks/bench_gpu.py                                   # on a CUDA machine: ~3 min
    python benchmarks/bench_gpu.py --batch_sizes 1 8 64 --train_batch_size 128
    python benchmarks/bench_gpu.py --skip_inference --compile      # pretraining, eager then compiled
"""

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode


REPO = Path(__file__).resolve().parents[1]

# Dense (no sparsity) peak TFLOP/s per GPU, from the vendors' data sheets: (bf16/fp16 tensor core, fp32 non-tensor).
PEAK_TFLOPS = {
    "H200": (989.4, 66.9),
    "H100 SXM": (989.4, 66.9),
    "H100 PCIe": (756.0, 51.2),
    "H100": (989.4, 66.9),
    "A100": (312.0, 19.5),
    "L40S": (362.1, 91.6),
    "A10": (125.0, 31.2),
    "L4": (121.0, 30.3),
    "V100": (125.0, 15.7),  # fp16 only (no bf16 units)
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of every inference clip.")
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per inference case (median).")
    parser.add_argument("--train_batch_size", type=int, default=64, help="Crops per pretraining step.")
    parser.add_argument("--train_steps", type=int, default=10, help="Timed pretraining steps (after 3 warm-up).")
    parser.add_argument("--train_fp32", action="store_true", help="Also time pretraining in fp32.")
    parser.add_argument("--peak_tflops", type=float, nargs=2, metavar=("BF16", "FP32"), help="Override the peaks.")
    parser.add_argument("--tiny", action="store_true", help="Tiny encoder (smoke test of the script).")
    parser.add_argument("--skip_inference", action="store_true", help="Only the pretraining part.")
    parser.add_argument("--compile", action="store_true", help="Also time the step with torch.compile(model).")
    parser.add_argument("--compile_backend", default="inductor", help="torch.compile backend of --compile.")
    return parser.parse_args(argv)


class HostSyncError(RuntimeError):
    pass


class HostSyncCheck(TorchDispatchMode):
    """Raises `HostSyncError` on an op whose result the host must wait for, while the mode is active: reading a
    value (`.item()`, `bool(tensor)`, `.tolist()`: `aten._local_scalar_dense`) or an output shape that depends on the
    data (`nonzero`, `masked_select`, boolean-mask indexing, `unique`). On CUDA each of them synchronises the host with
    the device; on any device this mode sees them, so the CPU tests check the same code path."""

    aten = torch.ops.aten
    SYNCING = {
        aten._local_scalar_dense.default,
        aten.nonzero.default,
        aten.nonzero_static.default,
        aten.masked_select.default,
        aten._unique2.default,
        aten.unique_dim.default,
        aten.unique_consecutive.default,
        aten.repeat_interleave.Tensor,
    }

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        boolean_index = func in (
            self.aten.index.Tensor,
            self.aten.index_put_.default,
            self.aten.index_put.default,
        ) and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool for index in args[1] if index is not None
        )
        if (func in self.SYNCING and func is not self.aten.nonzero_static.default) or boolean_index:
            raise HostSyncError(f"{func} inside the training step waits for the device (a host synchronisation)")
        return func(*args, **kwargs)


class no_host_sync:  # noqa: N801 (a context manager, used as `with no_host_sync(device):`)
    """`HostSyncCheck`, plus `torch.cuda.set_sync_debug_mode("error")` on CUDA (which also catches blocking copies
    between host and device)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.mode = HostSyncCheck()

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
        self.mode.__enter__()
        return self

    def __exit__(self, *exc_info):
        self.mode.__exit__(*exc_info)
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device, repeats: int) -> float:
    """Median wall seconds of `function()` over `repeats` calls (after one warm-up)."""
    function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def gemm_tflops(device: torch.device, dtype: torch.dtype, size: int = 8192) -> float:
    size = size if device.type == "cuda" else 1024
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, 10)
    return 2 * size**3 / seconds / 1e12


def device_peaks(device: torch.device, override) -> tuple[float, float] | None:
    if override:
        return tuple(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if all(part in name for part in key.split()):
            return peaks
    return None


def sdpa_backend_name(device: torch.device, dtype: torch.dtype) -> str:
    """Which sdpa kernel torch picks for a MATPAC-shaped attention (12 heads of 64, 191 tokens) in `dtype`."""
    if device.type != "cuda":
        return "cpu (math / flash-cpu)"
    from torch.nn.attention import SDPBackend, sdpa_kernel

    query = torch.randn(8, 12, 191, 64, device=device, dtype=dtype)
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        try:
            with sdpa_kernel([backend]):
                torch.nn.functional.scaled_dot_product_attention(query, query, query)
            return backend.name.lower()
        except RuntimeError:
            continue
    return "math"


def run_inference(args, device, config):
    from matpac_hf import MatpacFeatureExtractor, MatpacModel

    model = MatpacModel(config).to(device).eval()
    feature_extractor = MatpacFeatureExtractor()
    num_samples = int(args.seconds * config.sampling_rate)
    print(
        f"\ninference: {args.seconds:g} s clips, waveform -> clip embedding, attention {config._attn_implementation}"
    )
    print("| precision | sdpa kernel | " + " | ".join(f"batch {b}" for b in args.batch_sizes) + " |  (s audio / s)")
    print("| --- | --- | " + " | ".join("---" for _ in args.batch_sizes) + " |")
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            print(f"| {name} | - | " + " | ".join("no bf16" for _ in args.batch_sizes) + " |")
            continue
        cells = []
        for batch_size in args.batch_sizes:
            waveforms = 0.1 * torch.randn(batch_size, num_samples, device=device)

            def embed(waveforms=waveforms, dtype=dtype):
                with (
                    torch.no_grad(),
                    torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None),
                ):
                    return model(feature_extractor.extract_log_mel(waveforms)).pooler_output

            try:
                seconds = timed(embed, device, args.repeats)
                cells.append(f"{batch_size * args.seconds / seconds:.0f}")
            except torch.OutOfMemoryError:
                cells.append("OOM")
                torch.cuda.empty_cache()
        print(
            f"| {name} | {sdpa_backend_name(device, dtype or torch.float32)} | " + " | ".join(cells) + " |", flush=True
        )


def run_pretraining(args, device, config, peaks):
    # the training step bench_dataloader.py times on CPU, and its FLOP counter (it also counts the teacher's in-place
    # addmm_, which torch's table lacks)
    from bench_dataloader import model_flop_counter, pretraining_step

    from matpac_hf import MatpacFeatureExtractor, MatpacForPreTraining
    from matpac_hf.configuration_matpac import num_samples_for_frames

    sys.path.insert(0, str(REPO / "examples"))
    import run_pretraining as script  # the optimiser and the masking generator a real run uses

    torch.manual_seed(0)
    model = MatpacForPreTraining(config).to(device).train()
    optimizer_args = script.build_parser().parse_args(["--output_dir", "unused"])  # the script's optimiser defaults
    optimizer = script.build_optimizer(model, optimizer_args)
    trainable = [p for p in model.parameters() if p.requires_grad]
    feature_extractor = MatpacFeatureExtractor()
    crop_samples = num_samples_for_frames(config.max_frames, config.n_fft, config.hop_length)
    waveforms = 0.1 * torch.randn(args.train_batch_size, crop_samples, device=device)
    fused = any(group.get("fused") for group in optimizer.param_groups)
    compiled = {"model": None}

    def step(index, dtype, compiled_model=False):
        pretraining_step(
            compiled["model"] if compiled_model else model,
            optimizer,
            trainable,
            feature_extractor,
            waveforms,
            index,
            optimizer_args.max_grad_norm,
            dtype,
            generator=script.mask_generator(0, 0, index, 0),
            ema_model=model,
        )

    with model_flop_counter() as counter:
        step(0, None)
    flops = counter.get_total_flops()
    print(
        f"\npretraining ({'tiny' if args.tiny else 'base'}), batch {args.train_batch_size} crops of "
        f"{config.max_frames} frames: {flops / 1e9:.0f} GFLOP per step ({flops / args.train_batch_size / 1e9:.1f} "
        f"per crop, forward + backward + teacher, matmul / attention FLOPs); optimiser {type(optimizer).__name__}"
        f"{' (fused)' if fused else ''}"
    )
    precisions = [("bf16", torch.bfloat16)] + ([("fp32", None)] if args.train_fp32 or device.type != "cuda" else [])
    variants = [(name, dtype, False) for name, dtype in precisions]
    if args.compile:
        variants += [(f"{name} compiled", dtype, True) for name, dtype in precisions]
    steps = itertools.count(1)  # optimiser updates done so far, as a run counts them
    for name, dtype, use_compiled in variants:
        if use_compiled and compiled["model"] is None:
            compiled["model"] = torch.compile(model, dynamic=False, backend=args.compile_backend)
        synchronize(device)
        start = time.perf_counter()
        step(next(steps), dtype, use_compiled)  # warm-up (the compilation, for a compiled step)
        synchronize(device)
        first_seconds = time.perf_counter() - start
        for _ in range(2):
            step(next(steps), dtype, use_compiled)
        synchronize(device)
        with no_host_sync(device):  # raises on a host synchronisation inside the step
            step(next(steps), dtype, use_compiled)
        synchronize(device)  # after the check (an explicit synchronize is one)
        start = time.perf_counter()
        for _ in range(args.train_steps):
            step(next(steps), dtype, use_compiled)
        synchronize(device)
        seconds = (time.perf_counter() - start) / args.train_steps
        achieved = flops / seconds / 1e12
        line = f"  {name}: {1 / seconds:.2f} steps/s, {args.train_batch_size / seconds:.0f} crops/s, {achieved:.1f} TFLOP/s"
        if peaks:
            peak = peaks[0] if dtype is not None else peaks[1]
            line += f", MFU {100 * achieved / peak:.1f} % of the {peak:g} TFLOP/s dense {name.split()[0]} peak"
        if device.type == "cuda":
            line += f", peak memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB"
        if use_compiled:
            line += f", compile time {max(0.0, first_seconds - seconds):.1f} s"
        print(line + "; no host sync in a step", flush=True)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); nothing to measure. Skipped.")
        return 0
    from bench_machine import describe_cpu

    from matpac_hf import MatpacConfig
    from matpac_hf.inference import native_bf16_support

    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        print(
            f"device: {properties.name}, {properties.total_memory / 2**30:.0f} GiB, {properties.multi_processor_count} "
            f"SMs, torch {torch.__version__}, CUDA {torch.version.cuda}; {native_bf16_support(device)[1]}"
        )
    else:
        print(f"device: CPU ({describe_cpu()})")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (TF32 would be a third precision)
    torch.backends.cudnn.allow_tf32 = False
    tiny = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        decoder_hidden_size=32,
        decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
        head_hidden_size=48,
        head_bottleneck_size=16,
        head_num_prototypes=40,
    )
    config = MatpacConfig(**(tiny if args.tiny else {}), attn_implementation="sdpa")
    peaks = device_peaks(device, args.peak_tflops)
    measured = {
        name: gemm_tflops(device, dtype) for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    peak_text = f"bf16 {peaks[0]:g}, fp32 {peaks[1]:g} TFLOP/s" if peaks else "unknown (pass --peak_tflops BF16 FP32)"
    print(
        f"measured GEMM: fp32 {measured['fp32']:.3g} TFLOP/s, bf16 {measured['bf16']:.3g} TFLOP/s; data-sheet dense "
        f"peaks: {peak_text}"
    )
    if not args.skip_inference:
        run_inference(args, device, config)
    run_pretraining(args, device, config, peaks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
