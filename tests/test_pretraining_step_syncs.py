# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The pretraining step runs without host synchronisation on fixed-shape crops (what `benchmarks/bench_gpu.py` checks
on CUDA with `torch.cuda.set_sync_debug_mode("error")`): log-mel, masking from the run's host-side generator, student,
predictor, teacher, both losses, center, EMA teachers, clipping and the fused AdamW step run under `HostSyncCheck`,
which raises on every op whose result the host would wait for. Also: the check fires on such ops, and padded crops
(`attention_mask`) do sync (their kept patch counts are data-dependent shapes)."""

import pytest
import torch
from bench_dataloader import pretraining_step
from bench_gpu import HostSyncCheck, HostSyncError
from matpac_testing import tiny_config

from matpac_hf import MatpacFeatureExtractor, MatpacForPreTraining
from matpac_hf.configuration_matpac import num_samples_for_frames


@pytest.mark.parametrize(("use_mcl", "autocast_dtype"), [(False, torch.bfloat16), (True, None)])
def test_a_training_step_has_no_host_sync(use_mcl, autocast_dtype):
    import run_pretraining as script

    torch.manual_seed(0)
    model = MatpacForPreTraining(tiny_config(use_mcl=use_mcl)).train()
    optimizer = script.build_optimizer(model, script.build_parser().parse_args(["--output_dir", "unused"]))
    assert all(group["fused"] for group in optimizer.param_groups)
    trainable = [p for p in model.parameters() if p.requires_grad]
    feature_extractor = MatpacFeatureExtractor()
    waveforms = 0.1 * torch.randn(3, num_samples_for_frames(model.config.max_frames))

    def teacher():
        return torch.cat([p.detach().flatten() for p in model.teacher_encoder.parameters()])

    for step in range(3):  # step 0 skips the EMA; steps 1 and 2 run every part
        before = [model.center.clone(), trainable[0].detach().clone(), teacher()]
        with HostSyncCheck():
            pretraining_step(
                model,
                optimizer,
                trainable,
                feature_extractor,
                waveforms,
                step,
                3.0,
                autocast_dtype,
                generator=script.mask_generator(0, 0, step, 0),
            )
        assert not torch.equal(before[0], model.center) and not torch.equal(before[1], trainable[0])
        assert torch.equal(before[2], teacher()) == (step == 0)  # the EMA ran from step 1 on
    assert {p.dtype for p in model.teacher_encoder.parameters()} == {torch.float32}  # fp32 teachers under autocast


def test_the_check_fires_on_host_syncs():
    values = torch.arange(6.0)
    with pytest.raises(HostSyncError, match="_local_scalar_dense"):
        with HostSyncCheck():
            float(values.sum())
    with pytest.raises(HostSyncError, match="nonzero"):
        with HostSyncCheck():
            torch.nonzero(values > 2)
    with pytest.raises(HostSyncError, match="index"):
        with HostSyncCheck():
            values[values > 2]
    model = MatpacForPreTraining(tiny_config()).train()
    log_mel = torch.randn(2, model.config.max_frames, model.config.num_mel_bins)
    attention_mask = torch.ones(2, model.config.max_frames, dtype=torch.int32)
    attention_mask[1, 100:] = 0
    with pytest.raises(HostSyncError):  # a padded batch's kept patches are a data-dependent shape
        with HostSyncCheck():
            model(log_mel, attention_mask=attention_mask, step=1)


def test_bench_gpu_times_a_compiled_step_without_host_sync_on_cpu(capsys):
    """`bench_gpu.py --compile` on the CPU with the tiny encoder (aot_eager: no C++ compiler needed): the compiled step
    passes the same check and its compile time is reported."""
    import bench_gpu

    argv = ["--device", "cpu", "--tiny", "--skip_inference", "--train_steps", "1", "--train_batch_size", "2"]
    assert bench_gpu.main([*argv, "--compile", "--compile_backend", "aot_eager"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if "crops/s" in line]
    assert [line.split(":")[0] for line in lines] == ["bf16", "fp32", "bf16 compiled", "fp32 compiled"]
    assert all(line.endswith("no host sync in a step") for line in lines)
    assert all("compile time" in line for line in lines[2:])
