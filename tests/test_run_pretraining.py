# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""examples/run_pretraining.py and examples/run_pretraining_demo.py end to end, in this process (`main(argv)`):
outputs and the demo probe, exact resume after a crash while a checkpoint is written, SIGINT / SIGTERM checkpoints,
short clips; and one real 2-process accelerate launch."""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import run_pretraining as script
import run_pretraining_demo as demo_script
import soundfile as sf

from matpac_hf import training_utils


REPO = Path(__file__).resolve().parents[1]


MICRO_CONFIG = (
    "hidden_size=64,num_hidden_layers=2,num_attention_heads=2,intermediate_size=128,"
    "decoder_hidden_size=32,decoder_num_hidden_layers=1,decoder_num_attention_heads=2,"
    "decoder_intermediate_size=64,head_hidden_size=64,head_bottleneck_size=16,head_num_prototypes=64"
)
COMMON = ["--preset", "tiny", "--config_overrides", MICRO_CONFIG, "--logging_steps", "1", "--report_to", "jsonl"]
# 8 steps of 2 crops over 12 readable clips (6 steps per epoch): the resumed runs cross the epoch boundary
RESUME_ARGS = ["--per_device_batch_size", 2, "--max_steps", 8, "--checkpointing_steps", 3, "--shuffle_buffer_size", 0]
RESUME_ARGS += ["--seed", 3]
COMPARED = ("loss", "prediction_loss", "classification_loss", "teacher_perplexity", "learning_rate")

# torchdata's StatefulDataLoader calls a deprecated torch API on every loader; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


def run(*args, program=script) -> int:
    """`program.main(argv)` in this process; accelerate's process-wide state is reset afterwards (as between two
    runs)."""
    from accelerate.state import AcceleratorState

    try:
        return program.main(COMMON + [str(a) for a in args])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def metric_rows(output_dir) -> list[dict]:
    lines = (Path(output_dir) / "logs" / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row]


def metrics(output_dir) -> dict[int, dict]:
    """Per-step rows of logs/metrics.jsonl; each step must be there once (a resume drops the recomputed steps)."""
    rows = metric_rows(output_dir)
    steps = [row["step"] for row in rows]
    assert steps == sorted(set(steps)), f"steps logged twice or out of order: {steps}"
    return {row["step"]: row for row in rows}


def assert_same_losses(got: dict, expected: dict, steps):
    for step in steps:
        for key in COMPARED:
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=1e-7), (step, key)


def stop_at(monkeypatch, step: int, action):
    """Runs `action()` right after the metrics of `step` are logged (the training loop's per-step seam)."""
    log_metrics = script.log_metrics

    def logging_then_acting(*args, **kwargs):
        means = log_metrics(*args, **kwargs)
        if args[4] == step:
            action()
        return means

    monkeypatch.setattr(script, "log_metrics", logging_then_acting)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    """12 clips of 6.2-8 s: 16 kHz mono, some 44.1 kHz stereo, one corrupted file."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(12):
        sampling_rate = 44100 if i % 4 == 1 else 16000
        t = np.arange(int(rng.uniform(6.2, 8.0) * sampling_rate)) / sampling_rate
        wave = 0.4 * np.sin(2 * np.pi * (200 + 60 * i) * t * (1 + 0.02 * np.sin(2 * np.pi * 3 * t)))
        wave = wave + 0.05 * rng.standard_normal(t.shape[0])
        if i % 4 == 1:
            wave = np.stack([wave, 0.5 * wave], axis=1)
        sf.write(folder / f"clip_{i:02d}.flac", wave.astype(np.float32), sampling_rate)
    (folder / "clip_03_broken.flac").write_bytes(b"fLaC" + bytes(2000))
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_corpus):
    """The uninterrupted run (the default single DataLoader worker) that the resumed runs must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    assert run("--dataset_dir", small_corpus, *RESUME_ARGS, "--num_workers", 1, "--output_dir", out) == 0
    return metrics(out)


def test_demo_run_writes_both_folders_probes_and_pushes(tmp_path, hub_stub, monkeypatch, capsys):
    import torch
    from huggingface_hub import ModelCard, constants
    from transformers import AutoModel

    import matpac_hf

    monkeypatch.setattr(constants, "ENDPOINT", hub_stub.endpoint)  # read at import time by huggingface_hub
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    out = tmp_path / "run"
    args = ["--output_dir", out, "--demo_num_clips", 10, "--per_device_batch_size", 4, "--max_steps", 4]
    args += ["--checkpointing_steps", 2, "--num_workers", 0, "--shuffle_buffer_size", 0]
    args += ["--teacher_temperature_warmup_steps", 0, "--push_to_hub", "--hub_model_id", "stub-user/matpac-tiny"]
    assert run(*args, program=demo_script) == 0
    # both folders, the encoder loads with AutoModel and embeds audio
    assert (out / "pretraining_model" / "model.safetensors").is_file()
    encoder = AutoModel.from_pretrained(out / "encoder")
    assert type(encoder).__name__ == "MatpacModel" and encoder.config.hidden_size == 64
    pretraining = matpac_hf.MatpacForPreTraining.from_pretrained(out / "pretraining_model")
    student = pretraining.matpac.state_dict()
    assert student.keys() == encoder.state_dict().keys()
    assert all(torch.equal(student[name], tensor) for name, tensor in encoder.state_dict().items())
    with torch.no_grad():
        embedding = encoder(torch.zeros(1, 100, 80)).pooler_output
    assert embedding.shape == (1, 5 * 64) and torch.isfinite(embedding).all()
    card = ModelCard.load(out / "encoder" / "README.md")
    assert card.data.pipeline_tag == "feature-extraction" and card.data.library_name == "transformers"
    assert "| total_steps | 4 |" in card.text and "Quelennec" in card.text
    assert "over 4 steps: 0.99 -> 0.999 (encoder)" in card.text  # the objective with this run's numbers
    assert "a constant temperature 0.07 (no warm-up)" in card.text and "over 0 steps" not in card.text
    # the demo's settings (short crops, learning rate 1e-3) where the user left the defaults
    run_config = json.loads((out / "logs" / "run_config.json").read_text())
    assert run_config["crop"] == "96 frames (0.96 s)" and run_config["learning_rate"] == 1e-3
    # schedules written into the config, losses and monitors logged, the corrupted demo file skipped and counted
    assert encoder.config.total_steps == 4
    rows = metrics(out)
    assert sorted(rows) == [1, 2, 3, 4]
    assert all(np.isfinite(row["loss"]) and row["teacher_perplexity"] > 1 for row in rows.values())
    # 10 readable clips, batches of 4: 2 steps per epoch (the last 2 crops of an epoch make no full batch); the
    # corrupted file (second in the folder) is read once per epoch
    assert rows[1]["data/num_corrupted"] == 1 and rows[2]["epoch"] == 0
    assert rows[4]["epoch"] == 1 and rows[4]["data/num_corrupted"] == 2
    assert rows[4]["data/num_yielded"] == 10 + 8
    assert (out / "training_curves.png").stat().st_size > 10_000
    # the demo probe (run_linear_probe's cross-validation over the 5 folds of 400 clips, each fold's accuracy the mean
    # of 3 probe seeds): chance is 0.2 (+-0.04 at 95 %); even a random encoder's clip embeddings separate these
    # synthetic sounds well above it (measured: ~0.5 after 4 steps)
    probe = json.loads((out / "demo_probe.json").read_text())
    runs = json.loads((out / "demo_probe" / "synthetic_sounds_pretrained" / "results.json").read_text())["runs"]
    assert len(runs) == 15 and {run["seed"] for run in runs} == {0, 1, 2}
    assert probe["tasks"]["synthetic sounds"]["pretrained"]["folds"][0] == pytest.approx(
        np.mean([run["test_metric"] for run in runs if run["fold"] == "1"])
    )
    assert probe["corpus"] == "synthetic" and list(probe["tasks"]) == ["synthetic sounds"]
    for result in (probe["tasks"]["synthetic sounds"][name] for name in ("pretrained", "random_init")):
        assert result["n"] == 5 and result["num_classes"] == 5 and 0.35 < result["mean"] <= 1 and result["ci95"] > 0
    task = probe["tasks"]["synthetic sounds"]
    gain = 100 * (task["pretrained"]["mean"] - task["random_init"]["mean"])
    assert probe["mean_gain_points"] == pytest.approx(gain) == pytest.approx(task["gain_points"]["mean"])
    paired = [100 * (p - r) for p, r in zip(task["pretrained"]["folds"], task["random_init"]["folds"])]
    assert len(paired) == 5 and task["gain_points"]["ci95"] == pytest.approx(
        demo_script.run_linear_probe.summarise(paired)["ci95"]
    )
    assert "Demo linear probe on synthetic" in capsys.readouterr().out
    # pushed to the (stub) Hub: the encoder folder with its card
    files = hub_stub.files("stub-user/matpac-tiny")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert not hub_stub.unhandled


class SimulatedCrash(BaseException):
    """Stands for a SIGKILL: escapes every handler, leaves the files as they are."""


def test_crash_while_writing_a_checkpoint_then_resume_reproduces_the_losses(
    tmp_path, small_corpus, reference, monkeypatch
):
    """Killed while checkpoint-6 is written: checkpoint-3 is complete, checkpoint-6 only a temporary folder; the
    resumed run (one DataLoader worker, whose stream position torchdata saves) recomputes steps 4-8 exactly, and the
    log holds every step once."""
    out = tmp_path / "crashed"
    mark_complete = training_utils.mark_checkpoint_complete

    def crash_at_6(folder, step, num_processes):
        if step == 6:
            raise SimulatedCrash
        mark_complete(folder, step, num_processes)

    monkeypatch.setattr(training_utils, "mark_checkpoint_complete", crash_at_6)
    args = ["--dataset_dir", small_corpus, *RESUME_ARGS, "--num_workers", 1, "--output_dir", out]
    with pytest.raises(SimulatedCrash):
        run(*args)
    assert (out / "checkpoint-3" / "checkpoint_complete.json").is_file()
    assert not (out / "checkpoint-6").exists() and (out / ".tmp-checkpoint-6").exists()
    assert sorted(metrics(out)) == [1, 2, 3, 4, 5, 6]

    monkeypatch.setattr(training_utils, "mark_checkpoint_complete", mark_complete)
    assert run(*args, "--resume_from_checkpoint", "latest") == 0
    resumed = metrics(out)
    assert sorted(resumed) == list(range(1, 9))
    assert_same_losses(resumed, reference, range(1, 9))
    assert resumed[8]["epoch"] == reference[8]["epoch"] == 1
    assert (out / "checkpoint-6" / "checkpoint_complete.json").is_file()  # re-written after the resume
    assert not (out / ".tmp-checkpoint-6").exists()


def test_sigint_and_sigterm_write_a_checkpoint_and_the_run_continues(tmp_path, small_corpus, reference, monkeypatch):
    """Ctrl-C after step 2 and SIGTERM after step 5: each run finishes its step, writes checkpoint-<step> (not on the
    --checkpointing_steps grid), exits with 128 + the signal number and no final models; `--resume_from_checkpoint
    latest` continues. Decoding in-process here, so this also shows that the losses do not depend on the worker."""
    out = tmp_path / "signalled"
    args = ["--dataset_dir", small_corpus, *RESUME_ARGS, "--num_workers", 0, "--output_dir", out]
    with monkeypatch.context() as patch:
        stop_at(patch, 2, lambda: os.kill(os.getpid(), signal.SIGINT))
        assert run(*args) == 128 + signal.SIGINT
    assert (out / "checkpoint-2" / "checkpoint_complete.json").is_file() and not (out / "encoder").exists()
    with monkeypatch.context() as patch:
        stop_at(patch, 5, lambda: os.kill(os.getpid(), signal.SIGTERM))
        assert run(*args, "--resume_from_checkpoint", "latest") == 128 + signal.SIGTERM
    assert (out / "checkpoint-5" / "checkpoint_complete.json").is_file() and sorted(metrics(out)) == [1, 2, 3, 4, 5]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored after the run
    assert run(*args, "--resume_from_checkpoint", "latest") == 0
    resumed = metrics(out)
    assert sorted(resumed) == list(range(1, 9))
    assert_same_losses(resumed, reference, range(1, 9))
    assert (out / "encoder" / "model.safetensors").is_file()
    # rotation keeps the newest 3 complete checkpoints: 2, 3, 5 were written, then 6
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-5", "checkpoint-6"]


def test_short_clips_with_padding_and_a_shorter_crop(tmp_path):
    """Clips of 1-2.5 s: with the default drop policy the run stops with the counts and the fix; padded 304-frame
    crops train, and the logged counters say how many crops were padded."""
    folder = tmp_path / "short"
    folder.mkdir()
    for i in range(6):
        t = np.arange(int((1.0 + 0.3 * i) * 16000)) / 16000
        sf.write(folder / f"c{i}.flac", (0.3 * np.sin(2 * np.pi * (200 + 80 * i) * t)).astype(np.float32), 16000)
    args = ["--dataset_dir", folder, "--per_device_batch_size", 3, "--max_steps", 2, "--num_workers", 1]
    args += ["--shuffle_buffer_size", 0]
    with pytest.raises(
        ValueError, match=r"of 6 clips read, 6 were shorter than the 608-frame crop.*min_clip_policy pad"
    ):
        run(*args, "--output_dir", tmp_path / "dropped")
    out = tmp_path / "padded"
    assert run(*args, "--crop_frames", 304, "--min_clip_policy", "pad", "--output_dir", out) == 0
    rows = metrics(out)
    assert rows[2]["data/num_padded"] == 6 and rows[2]["data/num_too_short"] == 0 and np.isfinite(rows[2]["loss"])
    with pytest.raises(ValueError, match="--crop_frames 300 must be a multiple of the patch size 16"):
        run(*args, "--crop_frames", 300, "--min_clip_policy", "pad", "--output_dir", tmp_path / "bad")


def test_real_audio_demo_corpus_gets_short_padded_crops(tmp_path, monkeypatch):
    """`--demo_corpus real` pretrains on examples/real_audio_corpus.py's clips (a stand-in builder here: the real one
    renders speech and soundfonts for minutes) with 96-frame padded crops unless told otherwise."""

    def build(folder, num_clips, seed):
        os.makedirs(os.path.join(folder, "pretrain", "speech"))
        for i in range(4):
            t = np.arange(int((0.5 + 0.5 * i) * 16000)) / 16000  # 0.5-2 s
            clip = (0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t)).astype(np.float32)
            sf.write(os.path.join(folder, "pretrain", "speech", f"s{i}.wav"), clip, 16000)
        built = {"pretraining_clips": 4, "task_clips": {"digits": 10, "drums": 10}}
        Path(folder, "corpus.json").write_text(json.dumps(built))
        return built

    monkeypatch.setattr(demo_script.real_audio_corpus, "build_real_audio_corpus", build)
    out = tmp_path / "real"
    args = ["--demo_corpus", "real", "--per_device_batch_size", 2, "--max_steps", 2, "--num_workers", 0]
    assert run(*args, "--shuffle_buffer_size", 0, "--skip_demo_probe", "--output_dir", out, program=demo_script) == 0
    run_config = json.loads((out / "logs" / "run_config.json").read_text())
    assert run_config["crop"] == "96 frames (0.96 s)" and run_config["min_clip_policy"] == "pad"
    assert metrics(out)[2]["data/num_padded"] == 1 and metrics(out)[2]["data/num_too_short"] == 0  # the 0.5 s clip


def test_demo_settings_replace_only_options_not_given(monkeypatch):
    """The demo's settings fill in what the command line left out, even where a given value equals the default; the
    in-memory clip cache refuses DataLoader workers with the fix in the message."""
    from accelerate.state import AcceleratorState, PartialState

    monkeypatch.setattr(demo_script, "use_real_demo_corpus", lambda args: False)
    args = demo_script.parse_args(["--output_dir", "out", "--learning_rate", "3e-4", "--num_workers", "1"])
    assert args.learning_rate == demo_script.parse_args(["--output_dir", "out"]).learning_rate  # the default, given
    PartialState()  # accelerate's logger needs it
    try:
        demo_script.apply_demo_settings(args)
        assert args.learning_rate == 3e-4 and args.num_workers == 1
        assert args.crop_frames == 96 and args.audio_cache_mb == 512 and args.max_steps == demo_script.DEMO_MAX_STEPS
        with pytest.raises(ValueError, match="--audio_cache_mb 512 with --num_workers 1.*--num_workers 0"):
            script.build_data_loop(args, accelerator=None)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(SystemExit):
        demo_script.parse_args(["--output_dir", "out", "--audio_cache_mb", "-1"])
    with pytest.raises(SystemExit):  # a corpus is required, and the demo refuses one
        script.parse_args(["--output_dir", "out"])
    with pytest.raises(SystemExit):
        demo_script.parse_args(["--output_dir", "out", "--dataset_dir", "clips"])


@pytest.mark.slow
@pytest.mark.distributed
def test_two_cpu_processes_split_the_data_and_stay_in_sync(tmp_path, small_corpus):
    """A real 2-process launch (gloo): killed after step 3 (tests/pretraining_crash_launcher.py), resumed from
    checkpoint-2 with both processes' stream states; disjoint clips per epoch; identical replicas."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    env.update(ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "examples"), env.get("PYTHONPATH")]))  # the launcher
    out = tmp_path / "ddp"
    args = ["--dataset_dir", small_corpus, "--per_device_batch_size", 2, "--max_steps", 4, "--checkpointing_steps", 2]
    args += ["--num_workers", 0, "--shuffle_buffer_size", 4, "--log_example_ids", "--output_dir", out]

    def launch_run(extra, program):
        command = launch + [str(program)] + COMMON + [str(a) for a in args + extra]
        return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    result = launch_run(["--crash_after_step", 3], REPO / "tests" / "pretraining_crash_launcher.py")
    assert result.returncode != 0 and (out / "checkpoint-2" / "checkpoint_complete.json").is_file(), result.stderr
    assert {p.name for p in (out / "checkpoint-2").glob("training_state_rank*.pt")} == {
        "training_state_rank0.pt",
        "training_state_rank1.pt",
    }
    result = launch_run(["--max_steps", 5, "--resume_from_checkpoint", "latest"], script.__file__)
    assert result.returncode == 0, result.stderr[-6000:]
    assert "checkpoint-2 at step 2" in result.stderr

    def consumed(rank):
        lines = (out / "logs" / f"example_ids_rank{rank}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    per_rank = [consumed(0), consumed(1)]
    for rows in per_rank:  # the resume dropped the rows of the steps computed again
        assert [row["step"] for row in rows] == [0, 1, 2, 3, 4]
    # In every epoch the two ranks read disjoint clips (split_dataset_by_node; the shuffle buffer re-deals the clips
    # between ranks each epoch, and the ranks' epochs need not end at the same step).
    epochs = [{row["epoch"] for row in rows} for rows in per_rank]
    assert {0, 1} <= epochs[0] & epochs[1]
    for epoch in epochs[0] & epochs[1]:
        seen = [{clip for row in rows if row["epoch"] == epoch for clip in row["ids"]} for rows in per_rank]
        assert seen[0].isdisjoint(seen[1]), epoch
    checksums = json.loads((out / "logs" / "replica_checksums.json").read_text())
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert (out / "encoder" / "model.safetensors").is_file()
    assert sorted(metrics(out)) == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------------------- continued pretraining, optimiser


def build(tmp_path, *argv):
    """`build_model` as `main` calls it (after accelerate's state exists), for a 10-step run of 64-frame crops."""
    from accelerate import PartialState

    PartialState()
    argv = ["--output_dir", str(tmp_path / "out"), "--crop_frames", "64", *map(str, argv)]
    args = script.parse_args(argv, require_corpus=False)
    return script.build_model(args, {"max_steps": 10, "teacher_temperature_warmup_steps": 2})


def test_default_optimizer_is_fairseq_adam(tmp_path):
    import torch
    from conftest import tiny_config

    from matpac_hf import MatpacForPreTraining
    from matpac_hf.optimization import FairseqAdam

    model = MatpacForPreTraining(tiny_config())
    official = script.build_optimizer(model, script.parse_args(["--output_dir", str(tmp_path)], require_corpus=False))
    assert type(official) is FairseqAdam
    assert official.defaults["eps"] == 1e-6 and official.param_groups[0]["weight_decay"] == 0.05
    assert official.defaults["betas"] == (0.9, 0.95)
    adamw = script.build_optimizer(
        model, script.parse_args(["--output_dir", str(tmp_path), "--optimizer", "adamw"], require_corpus=False)
    )
    assert type(adamw) is torch.optim.AdamW


def test_encoder_folder_gives_teachers_equal_to_the_student_and_takes_overrides(tmp_path):
    import torch
    from conftest import tiny_config

    from matpac_hf import MatpacConfig, MatpacModel

    torch.manual_seed(0)
    encoder = MatpacModel(tiny_config())
    encoder.save_pretrained(tmp_path / "encoder")
    overrides = "ema_decay_start=0.5,teacher_init=copy_student,decoder_num_hidden_layers=2,head_num_prototypes=24"
    model = build(tmp_path, "--model_name_or_path", tmp_path / "encoder", "--config_overrides", overrides)
    config = model.config
    # applied: schedules, and the sizes of the parts the folder did not hold (predictor, heads: new)
    assert (config.ema_decay_start, config.teacher_init, config.decoder_num_hidden_layers) == (0.5, "copy_student", 2)
    assert len(model.predictor.layers) == 2 and config.head_num_prototypes == 24 and config.total_steps == 10
    assert torch.equal(model.matpac.encoder.layers[1].mlp.fc2.weight, encoder.encoder.layers[1].mlp.fc2.weight)
    for key, value in model.teacher_encoder.state_dict().items():
        assert torch.equal(value, encoder.encoder.state_dict()[key]), key
    for key, value in model.teacher_head.state_dict().items():
        assert torch.equal(value, model.student_head.state_dict()[key]), key
    model.save_pretrained(tmp_path / "saved")
    assert MatpacConfig.from_pretrained(tmp_path / "saved").teacher_init == "copy_student"
    # sizes of loaded weights are refused, not ignored
    with pytest.raises(ValueError, match=r"hidden_size=64 changes loaded weights \(matpac\.embeddings"):
        build(tmp_path, "--model_name_or_path", tmp_path / "encoder", "--config_overrides", "hidden_size=64")


def test_pretraining_folder_overrides_apply_or_are_refused(tmp_path):
    import torch
    from conftest import tiny_config

    from matpac_hf import MatpacForPreTraining

    torch.manual_seed(0)
    trained = MatpacForPreTraining(tiny_config())
    trained.save_pretrained(tmp_path / "pretraining")
    model = build(tmp_path, "--model_name_or_path", tmp_path / "pretraining", "--config_overrides", "mask_ratio=0.5")
    assert model.config.mask_ratio == 0.5
    for key, value in trained.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key  # every weight as loaded, teachers included
    with pytest.raises(ValueError, match="teacher_init='copy_student': .* holds trained teachers"):
        build(
            tmp_path,
            "--model_name_or_path",
            tmp_path / "pretraining",
            "--config_overrides",
            "teacher_init=copy_student",
        )
    with pytest.raises(ValueError, match=r"use_mcl=True changes loaded weights"):
        build(tmp_path, "--model_name_or_path", tmp_path / "pretraining", "--use_mcl")


def test_converted_training_checkpoint_continues_its_schedules(tmp_path, small_corpus):
    # An official fairseq training checkpoint (tests/official_reference.py: num_updates 100, heads in its cfg),
    # converted with --model_type pretraining, then continued: steps 101.. of the schedules, not 1..
    import torch
    from accelerate.state import AcceleratorState
    from official_reference import OfficialTrainingModel, randomize_training_
    from transformers import get_cosine_schedule_with_warmup

    from matpac_hf import MatpacConfig
    from matpac_hf.convert_original_checkpoint import convert_checkpoint
    from matpac_hf.modeling_matpac import teacher_temperature_at

    reference = randomize_training_(OfficialTrainingModel(), seed=8)
    torch.save(reference.fairseq_checkpoint(), tmp_path / "checkpoint_last.pt")
    folder = tmp_path / "converted"
    convert_checkpoint(tmp_path / "checkpoint_last.pt", folder, model_type="pretraining")
    out = tmp_path / "continued"
    args = [
        "--dataset_dir",
        small_corpus,
        "--per_device_batch_size",
        2,
        "--shuffle_buffer_size",
        0,
        "--num_workers",
        0,
    ]
    args += ["--crop_frames", 304, "--logging_steps", 1, "--report_to", "jsonl", "--model_name_or_path", folder]

    def run_continued(*more) -> int:  # without the module's --config_overrides (sizes of another model)
        try:
            return script.main([str(a) for a in (*args, *more)])
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)

    assert run_continued("--max_steps", 103, "--output_dir", out) == 0
    rows = metrics(out)
    assert sorted(rows) == [101, 102, 103]  # steps 101..103 of a 103-step schedule, not 1..103
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    expected_lr = get_cosine_schedule_with_warmup(optimizer, 7, 103)  # warm-up: round(103 * 20 / 300) = 7 steps
    for _ in range(101):
        optimizer.step()
        expected_lr.step()
    assert rows[101]["learning_rate"] == pytest.approx(expected_lr.get_last_lr()[0], rel=1e-6)
    saved = MatpacConfig.from_pretrained(out / "pretraining_model")
    assert rows[101]["teacher_temperature"] == pytest.approx(teacher_temperature_at(saved, 100), rel=1e-6)
    assert saved.num_attention_heads == 4  # the cfg's head count, carried through the run
    parse = functools.partial(script.parse_args, require_corpus=False)
    assert script.continued_step(parse(["--output_dir", "x", "--model_name_or_path", str(folder)])) == 100
    restart = ["--output_dir", "x", "--model_name_or_path", str(folder), "--restart_schedules"]
    assert script.continued_step(parse(restart)) == 0
    with pytest.raises(ValueError, match="continues from step 100 .* longer --max_steps, or --restart_schedules"):
        run_continued("--max_steps", 100, "--output_dir", tmp_path / "too_short")
