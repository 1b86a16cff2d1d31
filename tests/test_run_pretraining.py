# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""examples/run_pretraining.py end to end, in subprocesses: outputs, exact resume after a crash, 2 CPU processes."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "run_pretraining.py"
MICRO_CONFIG = (
    "hidden_size=64,num_hidden_layers=2,num_attention_heads=2,intermediate_size=128,"
    "decoder_hidden_size=32,decoder_num_hidden_layers=1,decoder_num_attention_heads=2,"
    "decoder_intermediate_size=64,head_hidden_size=64,head_bottleneck_size=16,head_num_prototypes=64"
)
COMMON = ["--preset", "tiny", "--config_overrides", MICRO_CONFIG, "--logging_steps", "1", "--report_to", "jsonl"]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_"))}
    env.update(
        {
            "HF_HUB_DISABLE_XET": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.update(extra)
    return env


def _run(args, env=None, check=True, launcher=None, timeout=300):
    command = (launcher or [sys.executable]) + [str(SCRIPT)] + COMMON + [str(a) for a in args]
    result = subprocess.run(command, cwd=REPO, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def _metrics(output_dir):
    """Per-step rows of logs/metrics.jsonl; a step logged twice (before a crash and after the resume) keeps the
    last row."""
    rows = {}
    for line in (Path(output_dir) / "logs" / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            rows[row["step"]] = row
    return rows


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


@pytest.mark.slow
def test_demo_run_writes_both_folders_and_pushes(tmp_path, hub_stub):
    import torch
    from huggingface_hub import ModelCard
    from transformers import AutoModel

    import matpac_hf  # noqa: F401  (registers MATPAC with the Auto classes)

    out = tmp_path / "run"
    env = _env(HF_ENDPOINT=hub_stub.endpoint, HF_TOKEN=hub_stub.token, HF_HUB_OFFLINE="0")
    result = _run(
        [
            "--output_dir",
            out,
            "--demo_num_clips",
            10,
            "--per_device_batch_size",
            4,
            "--max_steps",
            4,
            "--checkpointing_steps",
            2,
            "--num_workers",
            0,
            "--shuffle_buffer_size",
            0,
            "--push_to_hub",
            "--hub_model_id",
            "stub-user/matpac-tiny",
        ],
        env=env,
    )
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
    # schedules written into the config, losses and monitors logged, the corrupted demo file skipped and counted
    assert encoder.config.total_steps == 4
    metrics = _metrics(out)
    assert sorted(metrics) == [1, 2, 3, 4]
    assert all(np.isfinite(row["loss"]) and row["teacher_perplexity"] > 1 for row in metrics.values())
    # 10 readable clips, batches of 4: 2 steps per epoch (the last 2 crops of an epoch make no full batch); the
    # corrupted file (second in the folder) is read once per epoch
    assert metrics[1]["data/num_corrupted"] == 1 and metrics[2]["epoch"] == 0
    assert metrics[4]["epoch"] == 1 and metrics[4]["data/num_corrupted"] == 2
    assert metrics[4]["data/num_yielded"] == 10 + 8
    assert (out / "training_curves.png").stat().st_size > 10_000
    probe = json.loads((out / "demo_probe.json").read_text())
    assert 0.2 <= probe["probe_accuracy_random_init"] <= 1 and 0.2 <= probe["probe_accuracy_pretrained"] <= 1
    assert "Demo linear probe" in result.stdout
    # pushed to the (stub) Hub: the encoder folder with its card
    files = hub_stub.files("stub-user/matpac-tiny")
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= set(files)
    assert not hub_stub.unhandled


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_after_crash_reproduces_the_uninterrupted_losses(tmp_path, small_corpus, num_workers):
    """In-process decoding, and one DataLoader worker (the script's default; its stream position is saved through
    torchdata's StatefulDataLoader)."""
    args = [
        "--dataset_dir",
        small_corpus,
        "--per_device_batch_size",
        2,
        "--max_steps",
        8,
        "--checkpointing_steps",
        3,
        "--num_workers",
        num_workers,
        "--shuffle_buffer_size",
        0,
        "--seed",
        3,
    ]
    reference = tmp_path / "reference"
    _run(args + ["--output_dir", reference])
    expected = _metrics(reference)

    # Crash while writing checkpoint-6: checkpoint-3 is complete, checkpoint-6 only a temporary folder.
    crashed = tmp_path / "crashed"
    result = _run(
        args + ["--output_dir", crashed, "--simulate_crash", "during_checkpoint", "--simulate_crash_at_step", 6],
        check=False,
    )
    assert result.returncode == -9, result.stderr[-3000:]
    assert (crashed / "checkpoint-3" / "checkpoint_complete.json").is_file()
    assert not (crashed / "checkpoint-6").exists() and (crashed / ".tmp-checkpoint-6").exists()
    assert sorted(_metrics(crashed)) == [1, 2, 3, 4, 5, 6]

    result = _run(args + ["--output_dir", crashed, "--resume_from_checkpoint", "latest"])
    assert "Resumed from" in result.stderr and "checkpoint-3 at step 3" in result.stderr
    resumed = _metrics(crashed)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(4, 9):  # steps 4-8 were recomputed after the resume (epoch boundary at step 6 included)
        for key in ("loss", "prediction_loss", "classification_loss", "teacher_perplexity", "learning_rate"):
            assert resumed[step][key] == pytest.approx(expected[step][key], rel=1e-6, abs=1e-7), (step, key)
    assert resumed[8]["epoch"] == expected[8]["epoch"] == 1
    assert (crashed / "checkpoint-6" / "checkpoint_complete.json").is_file()  # re-written after the resume
    assert not (crashed / ".tmp-checkpoint-6").exists()


@pytest.mark.slow
@pytest.mark.distributed
def test_two_cpu_processes_split_the_data_and_stay_in_sync(tmp_path, small_corpus):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    launcher = [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29517",
    ]
    env = _env(ACCELERATE_USE_CPU="1")
    out = tmp_path / "ddp"
    args = [
        "--dataset_dir",
        small_corpus,
        "--per_device_batch_size",
        2,
        "--max_steps",
        4,
        "--checkpointing_steps",
        2,
        "--num_workers",
        0,
        "--shuffle_buffer_size",
        4,
        "--log_example_ids",
        "--output_dir",
        out,
        "--skip_demo_probe",
    ]
    result = _run(
        args + ["--simulate_crash", "after_step", "--simulate_crash_at_step", 3],
        env=env,
        launcher=launcher,
        check=False,
    )
    assert result.returncode != 0 and (out / "checkpoint-2" / "checkpoint_complete.json").is_file()
    assert {p.name for p in (out / "checkpoint-2").glob("training_state_rank*.pt")} == {
        "training_state_rank0.pt",
        "training_state_rank1.pt",
    }
    result = _run(args + ["--max_steps", 5, "--resume_from_checkpoint", "latest"], env=env, launcher=launcher)
    assert "checkpoint-2 at step 2" in result.stderr

    def consumed(rank):
        rows = [json.loads(line) for line in (out / "logs" / f"example_ids_rank{rank}.jsonl").read_text().splitlines()]
        return {row["step"]: row for row in rows}  # steps logged again after the resume keep the resumed row

    per_rank = [consumed(0), consumed(1)]
    assert sorted(per_rank[0]) == sorted(per_rank[1]) == [0, 1, 2, 3, 4]
    # In every epoch the two ranks read disjoint clips (split_dataset_by_node; the shuffle buffer re-deals the clips
    # between ranks each epoch, and the ranks' epochs need not end at the same step).
    epochs = [{row["epoch"] for row in rows.values()} for rows in per_rank]
    assert {0, 1} <= epochs[0] & epochs[1]
    for epoch in epochs[0] & epochs[1]:
        seen = [{clip for row in rows.values() if row["epoch"] == epoch for clip in row["ids"]} for rows in per_rank]
        assert seen[0].isdisjoint(seen[1]), epoch
    checksums = json.loads((out / "logs" / "replica_checksums.json").read_text())
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert (out / "encoder" / "model.safetensors").is_file()
    assert sorted(_metrics(out)) == [1, 2, 3, 4, 5]
