# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The machine a benchmark ran on, printed at the top of its output: `describe_cpu()`."""

import os
import platform

import torch

from matpac_hf.inference import NATIVE_BF16_CPU_FLAGS, cpu_flags, native_bf16_support


def cpu_name() -> str:
    """The CPU model name (/proc/cpuinfo `model name`, else `platform.processor()`)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_cpu() -> str:
    """One line naming the CPU, its core count, the SIMD / bf16 flags that matter for speed, and torch's threads."""
    flags = cpu_flags()
    shown = [flag for flag in ("avx2", "avx512f", "avx512_vnni", *NATIVE_BF16_CPU_FLAGS, "amx_int8") if flag in flags]
    return (
        f"{cpu_name()}, {os.cpu_count()} logical CPUs, flags: {' '.join(shown) or 'none of avx2/avx512/amx'}; "
        f"native bf16: {'yes' if native_bf16_support('cpu')[0] else 'no (bf16 is emulated, slower than fp32)'}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
