"""examples/run_linear_probe.py, in process (`main(argv)`), on a generated labelled audiofolder and tiny MATPAC
encoders; the probe functions other scripts reuse (`load_encoder`, `embed_waveforms`, `cross_validated_probe`)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import run_linear_probe
import soundfile as sf
import torch
from matpac_testing import tiny_config
from sklearn.metrics import average_precision_score

from matpac_hf import MatpacFeatureExtractor, MatpacModel


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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny MatpacModel whose weights are not a seed-0 initialisation (so no random init reproduces them)."""
    folder = tmp_path_factory.mktemp("checkpoint")
    torch.manual_seed(1234)
    MatpacModel(tiny_config()).save_pretrained(folder)
    MatpacFeatureExtractor().save_pretrained(folder)
    return folder


def probe_args(model, *extra):
    return ["--model_name_or_path", str(model), "--max_epochs", "30", "--patience", "10", *map(str, extra)]


def test_folds_on_audiofolder_and_cache_reuse(checkpoint, tone_folder, tmp_path, caplog):
    args = probe_args(checkpoint, "--dataset_dir", tone_folder, "--fold_column", "fold", "--output_dir", tmp_path)
    with caplog.at_level("INFO", logger="run_linear_probe"):
        results = run_linear_probe.main(args)
    assert results["metric"] == "accuracy" and results["num_classes"] == 3 and results["n"] == 5
    assert results["encoder"] == "pretrained weights"
    assert [run["fold"] for run in results["runs"]] == ["1", "2", "3", "4", "5"]
    assert all(run["num_test"] == 6 and run["num_train"] + run["num_validation"] == 24 for run in results["runs"])
    assert results["mean"] >= 0.8, f"accuracy {results['mean']} not well above chance (1/3)"
    values = [run["test_metric"] for run in results["runs"]]
    assert results["summarised"] == values  # one seed: the fold metrics are the runs'
    assert results["mean"] == pytest.approx(np.mean(values))
    assert results["ci95"] == pytest.approx(2.7764451 * np.std(values, ddof=1) / np.sqrt(5), abs=1e-6)
    cache = results["embedding_cache"]["train"]
    assert not cache["reused"] and Path(cache["path"]).is_file() and "Cached embeddings" in caplog.text

    # Second run: embeddings come from the cache, the encoder and the audio are never loaded; same numbers.
    caplog.clear()
    with caplog.at_level("INFO", logger="run_linear_probe"):
        again = run_linear_probe.main(args)
    assert again["embedding_cache"]["train"]["reused"] and "Loaded cached embeddings" in caplog.text
    assert "Loading " not in caplog.text and "Embedded" not in caplog.text
    assert again["mean"] == pytest.approx(results["mean"])
    assert json.loads((tmp_path / "results.json").read_text())["embedding_cache"]["train"]["reused"]

    # --random_init in the same output folder: its own cache entry (never the pretrained embeddings), its own numbers
    random_run = run_linear_probe.main(args + ["--random_init", "--init_seed", "3"])
    assert random_run["encoder"] == "random init of its config, seed 3"
    assert not random_run["embedding_cache"]["train"]["reused"]
    assert random_run["embedding_cache"]["train"]["path"] != cache["path"]
    with np.load(cache["path"]) as pretrained, np.load(random_run["embedding_cache"]["train"]["path"]) as random:
        assert pretrained["embeddings"].shape == random["embeddings"].shape
        assert np.abs(pretrained["embeddings"] - random["embeddings"]).max() > 1e-2


def test_random_init_is_the_same_config_seeded_and_differs_from_the_checkpoint(checkpoint):
    rng = np.random.default_rng(0)
    clips = [_tone(frequency, rng, seconds=0.8) for frequency in PITCHES_HZ.values()]

    def embed(seed):
        model, feature_extractor = run_linear_probe.load_encoder(str(checkpoint), random_init_seed=seed, device="cpu")
        return model, run_linear_probe.embed_waveforms(model, feature_extractor, clips, batch_size=2)

    pretrained_model, pretrained = embed(None)
    model, first = embed(0)
    _, again = embed(0)
    _, other_seed = embed(1)
    assert type(model) is type(pretrained_model) and model.config.to_dict() == pretrained_model.config.to_dict()
    assert first.shape == pretrained.shape == (3, 5 * 32) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)  # same seed: bit-identical embeddings
    assert np.abs(first - pretrained).max() > 1e-2  # not the checkpoint's weights
    assert np.abs(first - other_seed).max() > 1e-2
    # the random generator of the caller is left as it was
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    run_linear_probe.load_encoder(str(checkpoint), random_init_seed=0, device="cpu")
    assert torch.rand(1) == expected


def test_csv_with_fixed_splits_seeds_and_the_bad_audio_policy(checkpoint, tone_folder, tmp_path, monkeypatch):
    rows = list(csv.DictReader(open(tone_folder / "metadata.csv")))
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)  # the CSV is given as a relative path with a folder in it: data/clips.csv
    with open(tmp_path / "data" / "clips.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for row in rows:
            writer.writerow([tone_folder / row["file_name"], row["label"], "test" if row["fold"] == "5" else "train"])
        writer.writerow([tmp_path / "missing.wav", "low", "train"])
    args = probe_args(checkpoint, "--csv_file", "data/clips.csv", "--test_split", "test", "--seeds", 0, 1, 2)

    with pytest.raises(ValueError, match=r"missing\.wav.*--bad_audio skip"):  # the default policy refuses it
        run_linear_probe.main(args + ["--output_dir", str(tmp_path / "refused")])
    results = run_linear_probe.main(args + ["--output_dir", str(tmp_path / "out"), "--bad_audio", "skip"])
    assert results["n"] == 3 and [run["seed"] for run in results["runs"]] == [0, 1, 2]
    assert all(run["num_test"] == 6 for run in results["runs"]) and results["mean"] >= 0.8
    assert results["skipped_clips"] == {"train": [str(tmp_path / "missing.wav")]}
    assert results["ci95"] is not None and results["ci95"] >= 0
    assert results["dataset"] == "data/clips.csv"
    assert all(Path(cache["path"]).is_file() for cache in results["embedding_cache"].values())


def test_cross_validated_probe_tests_every_clip_once_and_learns_from_a_small_set():
    """200 clips of 5 classes (160-d embeddings, one class-mean direction each, 3 noise std away): the default probe
    reaches 0.74 (scikit-learn's logistic regression: 0.81). Before the small-set rules (>= 10 steps per epoch,
    validation ties broken by the loss) it stopped at epoch 1 with 2 steps per epoch: 0.39."""
    rng = np.random.default_rng(0)
    labels = [name for name in "abcde" for _ in range(40)]
    directions = rng.standard_normal((5, 160))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    embeddings = np.stack([rng.standard_normal(160) + 3.0 * directions["abcde".index(label)] for label in labels])
    result = run_linear_probe.cross_validated_probe(embeddings.astype(np.float32), labels, num_folds=5)
    assert result["n"] == 5 and sum(run["num_test"] for run in result["runs"]) == 200
    assert all(run["num_test"] == 40 for run in result["runs"])  # stratified: 8 clips of each class per fold
    assert all(run["batch_size"] == 15 for run in result["runs"])  # 144 training clips, >= 10 steps per epoch
    assert result["mean"] >= 0.65 and result["ci95"] >= 0
    # labels unrelated to the embeddings: chance level (1/5)
    shuffled = list(np.random.default_rng(1).permutation(labels))
    assert run_linear_probe.cross_validated_probe(embeddings.astype(np.float32), shuffled)["mean"] < 0.4


def test_map_metric_matches_a_hand_computed_value():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.3, 0.2], [0.1, 0.9]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    # class 0: positives at ranks 1 and 3 -> (1/1 + 2/3) / 2; class 1: positive at rank 2 -> 1/2
    assert run_linear_probe.mean_average_precision(scores, targets) == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert run_linear_probe.mean_average_precision(scores, targets) == pytest.approx(
        average_precision_score(targets, scores, average="macro")
    )


def test_map_metric_does_not_depend_on_the_order_of_tied_scores():
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
    assert run_linear_probe.T_975[3] == pytest.approx(2.776, abs=1e-3)  # the table used without scipy


def test_multi_label_probe_is_selected_and_scored_with_the_map_module():
    """The multi-label probe (BCE, early stopping and test score on the mAP module) learns separable tags."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    y = (x[:, :3] > 0).astype(np.float32)  # 3 tags, each linearly separable from the embeddings
    data = [{"x": x[i::3], "y": y[i::3]} for i in range(3)]
    result = run_linear_probe.train_linear_probe(
        *data, num_classes=3, seed=0, multi_label=True, learning_rate=1e-2, max_epochs=50, batch_size=16
    )
    assert result["test_metric"] > 0.95 and result["validation_metric"] > 0.95
    assert 1 <= result["best_epoch"] <= result["epochs_run"] <= 50
