"""The benchmarks' own logic (their figures are printed by the scripts, never asserted as timings here):

* the FLOP count behind "share of the GEMM rate": `bench_inference.encoder_flop_split` must be what the model runs, as
  torch's FLOP counter sees it (with bench_dataloader's additions for the in-place and CPU flash kernels), on both
  attention paths of the no-grad forward;
* `bench_gpu.py`, never run on a GPU here, runs every code path on the CPU with a tiny encoder (`--device cpu
  --tiny`), so it is ready when an accelerator is lent."""

import bench_gpu
import bench_machine
import pytest
import torch
from bench_dataloader import model_flop_counter
from bench_inference import chunk_columns, encoder_flop_split
from matpac_testing import tiny_config

from matpac_hf import MatpacModel, fast_inference


@pytest.mark.parametrize("attention", ["sdpa", "per_chunk"])
def test_encoder_flop_split_is_what_the_model_runs(attention, monkeypatch):
    if attention == "per_chunk":  # the tiny chunks (21 tokens) take the per-chunk bmm path too
        monkeypatch.setattr(fast_inference, "PER_CHUNK_ATTENTION_MIN_TOKENS", 1)
    config = tiny_config()
    model = MatpacModel(config).eval()
    num_clips, num_frames = 2, 2 * config.max_frames + 37  # two full chunks and a short one (3 patch columns)
    split = encoder_flop_split(config, chunk_columns(config, num_frames))
    assert chunk_columns(config, num_frames) == [4, 4, 3]
    with torch.no_grad(), model_flop_counter() as counter:
        model(torch.randn(num_clips, num_frames, config.num_mel_bins))
    counted = counter.get_flop_counts()["Global"]
    attention_ops = {"bmm", "baddbmm", "_scaled_dot_product_flash_attention_for_cpu"}
    attention_flops = sum(flops for op, flops in counted.items() if op.__name__.split(".")[0] in attention_ops)
    assert attention_flops == num_clips * split["attention products"] > 0
    assert counter.get_total_flops() == num_clips * sum(split.values())


def test_bench_gpu_runs_every_path_on_cpu(capsys):
    argv = ["--device", "cpu", "--tiny", "--batch_sizes", "1", "3", "--repeats", "1"]
    assert bench_gpu.main([*argv, "--train_steps", "1", "--train_batch_size", "2", "--train_fp32"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("| fp32 |", "| bf16 |", "| fp16 |"))]
    assert len(rows) == 3 and all(len(row.split("|")) == 6 for row in rows)  # precision, kernel, batch 1, batch 3
    assert "pretraining (tiny), batch 2 crops" in out
    assert len([line for line in out.splitlines() if line.strip().startswith(("bf16:", "fp32:"))]) == 2


def test_describe_cpu_names_the_machine_and_its_bf16_support():
    from matpac_hf.inference import cpu_flags, native_bf16_support

    line = bench_machine.describe_cpu()
    assert f"{torch.get_num_threads()} threads" in line and "logical CPUs" in line
    if cpu_flags():
        assert ("native bf16: yes" in line) == native_bf16_support("cpu")[0]
