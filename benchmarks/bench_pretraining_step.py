"""Where a pretraining step's time goes: forward, center update, backward, EMA teacher update, optimiser (issue 11.5).

One step is the loop of `MatpacForPreTraining.update_teachers`'s docstring: forward(step) -> backward ->
update_teachers(step) -> clip -> AdamW step, on random 608-frame log-mel crops, fp32, for the `tiny` and `base`
presets of examples/run_pretraining.py. Every phase is timed on its own (the median over the measured steps), and the
EMA update is also timed the way it was done before (one `lerp_` per parameter, matched by name each step) for
comparison. The center update (`MatpacClassificationLoss.update_center`) runs inside the forward and is timed there.
With `--all_reduce`, two CPU processes (gloo) time the center's `all_reduce` of `num_prototypes + 1` floats.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pretraining_step.py --presets tiny base --steps 3

The machines this runs on are shared: read the shares, not the absolute times.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from matpac_hf import MatpacConfig, MatpacForPreTraining
from matpac_hf.modeling_matpac import MatpacClassificationLoss


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from run_pretraining import PRESETS  # noqa: E402


def per_parameter_ema(teacher: torch.nn.Module, student: torch.nn.Module, decay: float):
    """The former EMA update: one `lerp_` per parameter, matched by name on every call."""
    students = dict(student.named_parameters())
    for name, parameter in teacher.named_parameters():
        parameter.lerp_(students[name].detach(), 1.0 - decay)


def time_phases(preset: str, batch_size: int, steps: int, ema_repeats: int = 5, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    config = MatpacConfig(**PRESETS[preset], total_steps=1000)
    model = MatpacForPreTraining(config).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)

    center_times = []
    update_center = MatpacClassificationLoss.update_center

    def timed_update_center(self, *args, **kwargs):
        start = time.perf_counter()
        result = update_center(self, *args, **kwargs)
        center_times.append(time.perf_counter() - start)
        return result

    MatpacClassificationLoss.update_center = timed_update_center
    phases = {name: [] for name in ("forward", "center", "backward", "ema", "ema_per_parameter", "optimizer")}
    try:
        for step in range(1, steps + 2):  # the first step warms up and is not counted
            values = torch.randn(batch_size, config.max_frames, config.num_mel_bins, generator=generator)
            times = {}
            start = time.perf_counter()
            outputs = model(values, step=step, generator=generator)
            times["forward"] = time.perf_counter() - start
            start = time.perf_counter()
            outputs.loss.backward()
            times["backward"] = time.perf_counter() - start
            # EMA: `ema_repeats` rounds alternating the current update and the former one (both move the teachers;
            # the extra moves only matter for timing), medians: on a shared machine one call is noisy.
            ema, ema_per_parameter = [], []
            for _ in range(ema_repeats):
                start = time.perf_counter()
                model.update_teachers(step)
                ema.append(time.perf_counter() - start)
                with torch.no_grad():
                    start = time.perf_counter()
                    encoder_decay, head_decay = model.ema_decays(step)
                    per_parameter_ema(model.teacher_encoder, model.matpac.encoder, encoder_decay)
                    per_parameter_ema(model.teacher_head, model.student_head, head_decay)
                    ema_per_parameter.append(time.perf_counter() - start)
            times["ema"], times["ema_per_parameter"] = statistics.median(ema), statistics.median(ema_per_parameter)
            start = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(parameters, 3.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times["optimizer"] = time.perf_counter() - start
            times["center"] = center_times[-1]
            if step > 1:
                for name, value in times.items():
                    phases[name].append(value)
    finally:
        MatpacClassificationLoss.update_center = update_center
    medians = {name: statistics.median(values) for name, values in phases.items()}
    medians["step"] = medians["forward"] + medians["backward"] + medians["ema"] + medians["optimizer"]
    medians["teacher_parameters"] = sum(p.numel() for p in (*model.teacher_encoder.parameters(),))
    medians["teacher_parameters"] += sum(p.numel() for p in model.teacher_head.parameters())
    return medians


def _all_reduce_worker(rank: int, world_size: int, port: int, num_values: int, calls: int, results):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    total = torch.ones(num_values)
    for _ in range(20):
        dist.all_reduce(total)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(calls):
        dist.all_reduce(total)
    elapsed = (time.perf_counter() - start) / calls
    if rank == 0:
        results.put(elapsed)
    dist.destroy_process_group()


def time_all_reduce(num_values: int, calls: int = 200) -> float:
    """Seconds per `all_reduce` of `num_values` float32 between two CPU processes (gloo)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    processes = [
        context.Process(target=_all_reduce_worker, args=(rank, 2, port, num_values, calls, results))
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return results.get()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"], choices=sorted(PRESETS))
    parser.add_argument(
        "--batch_sizes", nargs="+", type=int, default=None, help="per preset (default tiny 32, base 8)"
    )
    parser.add_argument("--steps", type=int, default=3, help="measured steps per preset (after one warm-up step)")
    parser.add_argument("--ema_repeats", type=int, default=5, help="EMA updates timed per step (median)")
    parser.add_argument("--all_reduce", action="store_true", help="also time the center's all_reduce (2 processes)")
    args = parser.parse_args()
    batch_sizes = args.batch_sizes or [{"tiny": 32, "base": 8}.get(p, 8) for p in args.presets]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, fp32, 608-frame crops")
    print(
        f"{'preset':>6} {'batch':>5} {'step s':>8} {'forward':>8} {'backward':>8} {'optim':>8} "
        f"{'EMA ms':>8} {'EMA %':>6} {'old EMA ms':>10} {'center ms':>9} {'center %':>8} {'teacher M':>9}"
    )
    for preset, batch_size in zip(args.presets, batch_sizes):
        t = time_phases(preset, batch_size, args.steps, args.ema_repeats)
        print(
            f"{preset:>6} {batch_size:>5} {t['step']:8.3f} {t['forward']:8.3f} {t['backward']:8.3f} "
            f"{t['optimizer']:8.3f} {1e3 * t['ema']:8.2f} {100 * t['ema'] / t['step']:6.2f} "
            f"{1e3 * t['ema_per_parameter']:10.2f} {1e3 * t['center']:9.3f} {100 * t['center'] / t['step']:8.4f} "
            f"{t['teacher_parameters'] / 1e6:9.2f}",
            flush=True,
        )
    if args.all_reduce:
        for preset in args.presets:
            num_values = MatpacConfig(**PRESETS[preset]).head_num_prototypes + 1
            seconds = time_all_reduce(num_values)
            print(f"center all_reduce ({preset}: {num_values} floats, 2 CPU processes, gloo): {1e6 * seconds:.1f} us")


if __name__ == "__main__":
    main()
