"""examples/run_linear_probe.py end to end on a generated labelled audiofolder and a tiny random MATPAC encoder."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import average_precision_score


SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "run_linear_probe.py"
PITCHES_HZ = {"low": 220.0, "mid": 880.0, "high": 3520.0}  # two octaves apart: far apart on the mel axis


def _tone(frequency, rng, seconds=1.0, sampling_rate=16000):
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    tone = rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * frequency * rng.uniform(0.97, 1.03) * t + rng.uniform(0, 6.3))
    return (tone + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def tone_folder(tmp_path_factory):
    """30 clips (10 per pitch class), 5 folds, as an audiofolder with metadata.csv (file_name,label,fold)."""
    folder = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    with open(folder / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "label", "fold"])
        for index in range(30):
            label = list(PITCHES_HZ)[index % 3]
            sf.write(folder / f"clip_{index:02d}.wav", _tone(PITCHES_HZ[label], rng), 16000)
            writer.writerow([f"clip_{index:02d}.wav", label, index % 5 + 1])
    return folder


def _import_script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import run_linear_probe
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return run_linear_probe


def _run(*args):
    command = [sys.executable, str(SCRIPT), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"run_linear_probe.py failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    return result.stdout + result.stderr


def test_folds_on_audiofolder_and_cache_reuse(tiny_matpac_folder, tone_folder, tmp_path, caplog):
    args = [
        "--model_name_or_path",
        tiny_matpac_folder,
        "--dataset_dir",
        tone_folder,
        "--fold_column",
        "fold",
        "--output_dir",
        tmp_path / "probe",
        "--max_epochs",
        "100",
        "--learning_rate",
        "1e-2",
    ]
    log = _run(*args)
    results = json.loads((tmp_path / "probe" / "results.json").read_text())
    assert results["metric"] == "accuracy" and results["num_classes"] == 3 and results["n"] == 5
    assert [run["fold"] for run in results["runs"]] == ["1", "2", "3", "4", "5"]
    assert all(run["num_test"] == 6 and run["num_train"] + run["num_validation"] == 24 for run in results["runs"])
    assert results["mean"] >= 0.8, f"accuracy {results['mean']} not well above chance (1/3)"
    values = [run["test_metric"] for run in results["runs"]]
    assert results["mean"] == pytest.approx(np.mean(values))
    assert results["ci95"] == pytest.approx(2.7764451 * np.std(values, ddof=1) / np.sqrt(5), abs=1e-6)
    cache = results["embedding_cache"]["train"]
    assert not cache["reused"] and Path(cache["path"]).is_file() and "Cached embeddings" in log

    # Second run (in this process, to save a start-up): embeddings come from the cache, the encoder and the audio are
    # never loaded; same numbers.
    with caplog.at_level("INFO", logger="run_linear_probe"):
        again = _import_script().main([str(arg) for arg in args])
    assert again["embedding_cache"]["train"]["reused"] and "Loaded cached embeddings" in caplog.text
    assert "Loading " not in caplog.text and "Embedded" not in caplog.text
    assert again["mean"] == pytest.approx(results["mean"])
    assert json.loads((tmp_path / "probe" / "results.json").read_text())["embedding_cache"]["train"]["reused"]


def test_csv_with_fixed_splits_and_seeds(tiny_matpac_folder, tone_folder, tmp_path, monkeypatch):
    run_linear_probe = _import_script()
    rows = list(csv.DictReader(open(tone_folder / "metadata.csv")))
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)  # the CSV is given as a relative path with a folder in it: data/clips.csv
    with open(tmp_path / "data" / "clips.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for row in rows:
            writer.writerow([tone_folder / row["file_name"], row["label"], "test" if row["fold"] == "5" else "train"])
        writer.writerow([tmp_path / "missing.wav", "low", "train"])  # unreadable: skipped, reported
    results = run_linear_probe.main(
        [
            "--model_name_or_path",
            str(tiny_matpac_folder),
            "--csv_file",
            "data/clips.csv",
            "--test_split",
            "test",
            "--seeds",
            "0",
            "1",
            "2",
            "--output_dir",
            str(tmp_path / "out"),
            "--max_epochs",
            "100",
            "--learning_rate",
            "1e-2",
        ]
    )
    assert results["n"] == 3 and [run["seed"] for run in results["runs"]] == [0, 1, 2]
    assert all(run["num_test"] == 6 for run in results["runs"]) and results["mean"] >= 0.8
    assert results["skipped_clips"] == {"train": [str(tmp_path / "missing.wav")]}
    assert results["ci95"] is not None and results["ci95"] >= 0
    assert results["dataset"] == "data/clips.csv"
    assert all(Path(cache["path"]).is_file() for cache in results["embedding_cache"].values())


def test_map_metric_matches_a_hand_computed_value():
    run_linear_probe = _import_script()
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.9]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: positive at rank 2 -> 1/2
    assert run_linear_probe.mean_average_precision(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert run_linear_probe.mean_average_precision(scores, targets) == pytest.approx(
        average_precision_score(targets, scores, average="macro")
    )


def test_map_metric_does_not_depend_on_the_order_of_tied_scores():
    run_linear_probe = _import_script()
    # class 0: 4 clips tied at 0.5 (1 positive), then a positive at 0.2. The only thresholds are 0.5 (precision 1/4,
    # recall 1/2) and 0.2 (precision 2/5, recall 1): AP = 1/2 * 1/4 + 1/2 * 2/5 = 0.325, whatever the clip order.
    # class 1: positives tied with a negative at 0.9 (precision 2/3, recall 1): AP = 2/3.
    scores = np.array([[0.5, 0.9], [0.5, 0.9], [0.5, 0.9], [0.5, 0.1], [0.2, 0.1]])
    targets = np.array([[1, 1], [0, 1], [0, 0], [0, 0], [1, 0]])
    expected = (0.325 + 2 / 3) / 2
    assert average_precision_score(targets, scores, average="macro") == pytest.approx(expected)
    for permutation in ([0, 1, 2, 3, 4], [3, 2, 1, 0, 4], [2, 3, 0, 1, 4]):
        value = run_linear_probe.mean_average_precision(scores[permutation], targets[permutation])
        assert value == pytest.approx(expected)
    assert run_linear_probe.t_quantile_975(4) == pytest.approx(2.776445, abs=1e-5)


def test_multi_label_probe_is_selected_and_scored_with_the_map_module():
    """The multi-label probe (BCE, early stopping and test score on the mAP module) learns separable tags."""
    run_linear_probe = _import_script()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    y = (x[:, :3] > 0).astype(np.float32)  # 3 tags, each linearly separable from the embeddings
    data = [{"x": x[i::3], "y": y[i::3]} for i in range(3)]
    args = run_linear_probe.parse_args(
        [
            "--model_name_or_path",
            "unused",
            "--csv_file",
            "unused.csv",
            "--test_split",
            "test",
            "--output_dir",
            "out",
            "--multi_label",
            "--learning_rate",
            "1e-2",
            "--max_epochs",
            "50",
            "--batch_size",
            "16",
        ]
    )
    result = run_linear_probe.train_linear_probe(*data, num_classes=3, seed=0, args=args)
    assert result["test_metric"] > 0.95 and result["validation_metric"] > 0.95
    assert 1 <= result["best_epoch"] <= result["epochs_run"] <= 50
