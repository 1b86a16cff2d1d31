# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""MatpacForAudioClassification, the local metric modules, the audio-classification pipeline and
examples/run_audio_classification.py (run end to end on generated audio)."""

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import evaluate
import numpy as np
import pytest
import soundfile as sf
import torch
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score
from transformers import AutoModelForAudioClassification, pipeline

import matpac_hf
from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacForAudioClassification, MatpacModel


REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "examples" / "run_audio_classification.py"
METRICS_DIR = Path(matpac_hf.__file__).parent / "metrics"
SAMPLING_RATE = 16000
TONE_HZ = {"low": 300.0, "mid": 1200.0, "high": 4000.0}


def tiny_config(**overrides) -> MatpacConfig:
    values = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=3)
    values.update(overrides)
    return MatpacConfig(**values)


def padded_batch(seed: int = 0):
    """Two log-mel clips of 100 and 60 frames, padded to 100 (mask 0 on the padding, junk values under it)."""
    generator = torch.Generator().manual_seed(seed)
    input_values = torch.randn(2, 80, 100, generator=generator)
    attention_mask = torch.ones(2, 100, dtype=torch.long)
    attention_mask[1, 60:] = 0
    return input_values, attention_mask


def tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Pooling heads
# ----------------------------------------------------------------------------------------------------------------------


def test_concat_pooling_is_linear_on_the_clip_embedding():
    torch.manual_seed(0)
    model = MatpacForAudioClassification(tiny_config(classifier_pooling="concat")).eval()
    assert model.classifier.in_features == 5 * 32
    input_values, attention_mask = padded_batch()

    logits = model(input_values, attention_mask=attention_mask).logits
    encoder_outputs = model.matpac(input_values, attention_mask=attention_mask)
    # clip 1 has 60 frames -> ceil(60 / 16) = 4 valid frame embeddings
    clip_embeddings = torch.stack(
        [encoder_outputs.last_hidden_state[0].mean(0), encoder_outputs.last_hidden_state[1, :4].mean(0)]
    )
    expected = clip_embeddings @ model.classifier.weight.T + model.classifier.bias
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_mean_pooling_is_masked_token_mean_then_batchnorm_then_linear():
    torch.manual_seed(0)
    model = MatpacForAudioClassification(tiny_config(classifier_pooling="mean")).eval()
    assert model.classifier.in_features == 32
    assert model.head_norm.weight is None  # BatchNorm1d without affine parameters
    model.head_norm.running_mean.uniform_(-1, 1)
    model.head_norm.running_var.uniform_(0.5, 2.0)
    input_values, attention_mask = padded_batch()

    logits = model(input_values, attention_mask=attention_mask).logits
    frames = model.matpac(input_values, attention_mask=attention_mask).last_hidden_state  # (2, 7, 5 * 32)
    token_means = []
    for clip, valid_frames in ((0, 7), (1, 4)):
        tokens = frames[clip, :valid_frames].reshape(valid_frames, 5, 32)  # (T', F, hidden)
        token_means.append(tokens.mean(dim=(0, 1)))
    token_means = torch.stack(token_means)
    normalised = (token_means - model.head_norm.running_mean) / torch.sqrt(
        model.head_norm.running_var + model.head_norm.eps
    )
    expected = normalised @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)

    # the padded clip gets exactly what it gets alone
    alone = model(input_values[1:, :, :60]).logits
    torch.testing.assert_close(logits[1:], alone, rtol=1e-5, atol=1e-5)


def test_mean_pooling_refuses_a_single_clip_in_training():
    model = MatpacForAudioClassification(tiny_config(classifier_pooling="mean")).train()
    with pytest.raises(ValueError, match="at least 2 clips"):
        model(torch.randn(1, 80, 32))
    model.eval()
    assert model(torch.randn(1, 80, 32)).logits.shape == (1, 3)


def test_dropout_sits_before_the_classifier():
    model = MatpacForAudioClassification(tiny_config(classifier_dropout=0.5))
    assert model.dropout.p == 0.5
    input_values, attention_mask = padded_batch()
    model.train()
    first, second = (model(input_values, attention_mask=attention_mask).logits for _ in range(2))
    assert not torch.allclose(first, second)
    model.eval()
    first, second = (model(input_values, attention_mask=attention_mask).logits for _ in range(2))
    torch.testing.assert_close(first, second)


def test_hidden_states_are_returned_in_frame_layout():
    model = MatpacForAudioClassification(tiny_config()).eval()
    outputs = model(torch.randn(2, 80, 64), output_hidden_states=True)
    assert len(outputs.hidden_states) == 2  # embeddings + 1 block
    assert outputs.hidden_states[-1].shape == (2, 4, 160)
    assert outputs.loss is None


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------


def test_single_label_loss_is_cross_entropy():
    torch.manual_seed(0)
    model = MatpacForAudioClassification(tiny_config()).eval()
    labels = torch.tensor([2, 0])
    outputs = model(torch.randn(2, 80, 48), labels=labels)
    assert model.config.problem_type == "single_label_classification"
    torch.testing.assert_close(outputs.loss, torch.nn.functional.cross_entropy(outputs.logits, labels))


def test_multi_label_loss_is_bce_with_logits():
    torch.manual_seed(0)
    model = MatpacForAudioClassification(tiny_config()).eval()
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    outputs = model(torch.randn(2, 80, 48), labels=targets)  # float targets -> multi-label (transformers' rule)
    assert model.config.problem_type == "multi_label_classification"
    expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs.logits, targets)
    torch.testing.assert_close(outputs.loss, expected)
    # integer multi-hot targets work too once the problem type is set
    torch.testing.assert_close(model(torch.randn(2, 80, 48), labels=targets.long()).loss.isfinite(), torch.tensor(True))


@pytest.mark.parametrize("num_labels", [1, 2])
def test_regression_loss_is_mse(num_labels):
    torch.manual_seed(0)
    model = MatpacForAudioClassification(tiny_config(num_labels=num_labels)).eval()
    targets = torch.randn(2, num_labels)
    if num_labels == 1:
        model.config.problem_type = None  # one output -> regression (transformers' rule)
        targets = targets[:, 0]
    else:
        model.config.problem_type = "regression"
    outputs = model(torch.randn(2, 80, 48), labels=targets)
    assert model.config.problem_type == "regression"
    expected = torch.nn.functional.mse_loss(outputs.logits.reshape(targets.shape), targets)
    torch.testing.assert_close(outputs.loss, expected)


def test_bad_labels_raise_clear_errors():
    model = MatpacForAudioClassification(tiny_config(problem_type="single_label_classification")).eval()
    with pytest.raises(ValueError, match="multi_label_classification"):
        model(torch.randn(2, 80, 48), labels=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model(torch.randn(2, 80, 48), labels=torch.tensor([0, 3]))
    model.config.problem_type = "multi_label_classification"
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        model(torch.randn(2, 80, 48), labels=torch.ones(2, 4))


# ----------------------------------------------------------------------------------------------------------------------
# Freezing, saving, Auto classes
# ----------------------------------------------------------------------------------------------------------------------


def test_freeze_encoder_trains_only_the_head(tmp_path):
    model = MatpacForAudioClassification(tiny_config(freeze_encoder=True))
    assert not any(p.requires_grad for p in model.matpac.parameters())
    model(torch.randn(2, 80, 48), labels=torch.tensor([0, 1])).loss.backward()
    assert all(p.grad is None for p in model.matpac.parameters())
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0

    # the choice survives save / load (loading builds fresh, trainable parameters)
    model.save_pretrained(tmp_path)
    reloaded = MatpacForAudioClassification.from_pretrained(tmp_path)
    assert not any(p.requires_grad for p in reloaded.matpac.parameters())
    assert reloaded.classifier.weight.requires_grad

    # the method freezes a full fine-tuning model and records it in the config
    full = MatpacForAudioClassification(tiny_config())
    assert all(p.requires_grad for p in full.matpac.parameters())
    full.freeze_encoder()
    assert full.config.freeze_encoder and not any(p.requires_grad for p in full.matpac.parameters())


@pytest.mark.parametrize("pooling", ["concat", "mean"])
def test_save_load_round_trip(tmp_path, pooling):
    labels = ["dog", "rain", "siren"]
    config = tiny_config(
        classifier_pooling=pooling, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    model = MatpacForAudioClassification(config).train()
    model(torch.randn(4, 80, 48))  # updates the BatchNorm running statistics of the "mean" head
    model.eval()
    input_values, attention_mask = padded_batch()
    expected = model(input_values, attention_mask=attention_mask).logits

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForAudioClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, MatpacForAudioClassification)
    assert reloaded.config.id2label == {0: "dog", 1: "rain", 2: "siren"}
    torch.testing.assert_close(reloaded(input_values, attention_mask=attention_mask).logits, expected)
    if pooling == "mean":
        assert int(reloaded.head_norm.num_batches_tracked) == 1


def test_encoder_checkpoint_loads_into_the_classifier(tmp_path):
    encoder = MatpacModel(tiny_config())
    encoder.save_pretrained(tmp_path)
    model = MatpacForAudioClassification.from_pretrained(tmp_path, num_labels=4)
    assert model.classifier.out_features == 4
    for name, parameter in encoder.state_dict().items():
        torch.testing.assert_close(model.matpac.state_dict()[name], parameter)
    auto = AutoModelForAudioClassification.from_config(tiny_config())
    assert isinstance(auto, MatpacForAudioClassification)


# ----------------------------------------------------------------------------------------------------------------------
# Local metric modules against scikit-learn
# ----------------------------------------------------------------------------------------------------------------------


def test_accuracy_module_matches_sklearn():
    rng = np.random.default_rng(0)
    predictions, references = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    result = evaluate.load(str(METRICS_DIR / "accuracy")).compute(predictions=predictions, references=references)
    assert result["accuracy"] == pytest.approx(accuracy_score(references, predictions))


def test_multi_label_modules_match_sklearn():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((120, 7)), 1)  # rounded: many tied scores
    targets = (rng.random((120, 7)) < 0.3).astype(np.int64)
    targets[0] = 1  # every class has a positive
    targets[1] = 0  # and a negative
    map_metric = evaluate.load(str(METRICS_DIR / "mean_average_precision"))
    auc_metric = evaluate.load(str(METRICS_DIR / "roc_auc"))
    for average in ("macro", "micro"):
        mean_ap = map_metric.compute(predictions=scores, references=targets, average=average)
        auc = auc_metric.compute(predictions=scores, references=targets, average=average)
        expected_ap = average_precision_score(targets, scores, average=average)
        assert mean_ap["mean_average_precision"] == pytest.approx(expected_ap)
        assert auc["roc_auc"] == pytest.approx(roc_auc_score(targets, scores, average=average))
    per_class = map_metric.compute(predictions=scores, references=targets, average="none")["mean_average_precision"]
    np.testing.assert_allclose(per_class, average_precision_score(targets, scores, average=None))

    # a class without positives is left out of the macro mean (AP undefined there)
    targets[:, 3] = 0
    kept = [k for k in range(7) if k != 3]
    mean_ap = map_metric.compute(predictions=scores, references=targets)["mean_average_precision"]
    auc = auc_metric.compute(predictions=scores, references=targets)["roc_auc"]
    assert mean_ap == pytest.approx(average_precision_score(targets[:, kept], scores[:, kept]))
    assert auc == pytest.approx(roc_auc_score(targets[:, kept], scores[:, kept]))


# ----------------------------------------------------------------------------------------------------------------------
# The example script, end to end, and the pipeline on its output
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated_data(tmp_path_factory):
    """24 tones in an audiofolder (3 classes), a multi-label CSV over the same files, and a tiny MatpacModel."""
    root = tmp_path_factory.mktemp("audio_classification")
    rng = np.random.default_rng(0)
    rows = []
    for name, freq in TONE_HZ.items():
        (root / "folder" / name).mkdir(parents=True)
        for index in range(8):
            clip = tone(freq, rng.uniform(0.5, 1.5), rng)
            if index % 2:  # odd clips also carry a low tone: a second label
                clip = clip + tone(TONE_HZ["low"], clip.size / SAMPLING_RATE, rng)
            path = root / "folder" / name / f"{index}.wav"
            sf.write(path, clip, SAMPLING_RATE)
            tags = sorted({name, "low"}) if index % 2 else [name]
            rows.append({"file": f"folder/{name}/{index}.wav", "tags": ";".join(tags)})
    with open(root / "tags.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["file", "tags"])
        writer.writeheader()
        writer.writerows(rows)
    torch.manual_seed(0)
    MatpacModel(tiny_config()).save_pretrained(root / "tiny_matpac")
    return root


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--num_train_epochs", "2", "--per_device_train_batch_size", "4",
               "--per_device_eval_batch_size", "4", "--learning_rate", "1e-3", "--use_cpu", "--seed", "0",
               "--max_length_seconds", "1.0", "--dataloader_num_workers", "0", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def single_label_run(generated_data, hub_stub):
    """Fine-tunes the tiny encoder on the audiofolder with augmentation and pushes it to the local Hub stub."""
    output_dir = generated_data / "single_label_run"
    run_script(
        "--model_name_or_path", str(generated_data / "tiny_matpac"), "--dataset_name", str(generated_data / "folder"),
        "--output_dir", str(output_dir), "--aug_gain", "0.5", "--aug_noise", "0.5", "--aug_time_shift", "0.5",
        "--push_to_hub", "--hub_model_id", "stub-user/matpac-tones",
    )  # fmt: skip
    return output_dir


@pytest.mark.slow
def test_script_single_label_audiofolder(single_label_run, hub_stub):
    metrics = json.loads((single_label_run / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0
    assert math.isfinite(metrics["eval_loss"])
    config = json.loads((single_label_run / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(TONE_HZ)
    assert config["problem_type"] == "single_label_classification"
    state = json.loads((single_label_run / "trainer_state.json").read_text())
    assert [round(entry["epoch"]) for entry in state["log_history"] if "eval_accuracy" in entry] == [1, 2]
    assert state["best_metric"] is not None  # load_best_model_at_end tracked the best checkpoint
    card = (single_label_run / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card and "library_name: transformers" in card
    assert "Quelennec" in card and "accuracy" in card
    assert (single_label_run / "preprocessor_config.json").exists()

    pushed = hub_stub.files("stub-user/matpac-tones")
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(pushed)
    pushed_card = hub_stub.read_blob(pushed["README.md"].sha256).decode()
    assert pushed_card == card and "stub-user/matpac-tones" in pushed_card


@pytest.mark.slow
def test_script_multi_label_csv(generated_data):
    output_dir = generated_data / "multi_label_run"
    run_script(
        "--config_overrides", "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64",
        "--train_file", str(generated_data / "tags.csv"), "--audio_column_name", "file",
        "--label_column_name", "tags", "--label_separator", ";", "--train_val_split", "0.25",
        "--output_dir", str(output_dir), "--classifier_pooling", "mean",
    )  # fmt: skip
    metrics = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= metrics["eval_mean_average_precision"] <= 1.0
    assert 0.0 <= metrics["eval_roc_auc"] <= 1.0
    config = json.loads((output_dir / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["classifier_pooling"] == "mean"
    assert sorted(config["id2label"].values()) == sorted(TONE_HZ)

    classifier = pipeline("audio-classification", model=str(output_dir))
    clip = tone(TONE_HZ["mid"], 1.0, np.random.default_rng(1))
    predictions = classifier(clip, top_k=None)
    features = classifier.feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        expected = torch.sigmoid(classifier.model(**features).logits[0])  # multi-label: independent sigmoid scores
    by_label = {p["label"]: p["score"] for p in predictions}
    for index, name in classifier.model.config.id2label.items():
        assert by_label[name] == pytest.approx(float(expected[index]), abs=1e-5)


@pytest.mark.slow
def test_pipeline_on_the_fine_tuned_folder(single_label_run):
    classifier = pipeline("audio-classification", model=str(single_label_run))
    assert isinstance(classifier.model, MatpacForAudioClassification)
    assert isinstance(classifier.feature_extractor, MatpacFeatureExtractor)
    clip = tone(TONE_HZ["high"], 1.2, np.random.default_rng(2))

    top_two = classifier(clip, top_k=2)
    assert len(top_two) == 2
    assert {p["label"] for p in top_two} <= set(TONE_HZ)
    assert top_two[0]["score"] >= top_two[1]["score"]
    assert sum(p["score"] for p in top_two) <= 1.0 + 1e-6

    everything = classifier({"raw": clip, "sampling_rate": SAMPLING_RATE}, top_k=None)
    assert sorted(p["label"] for p in everything) == sorted(TONE_HZ)
    assert sum(p["score"] for p in everything) == pytest.approx(1.0, abs=1e-5)
    assert [p["label"] for p in everything[:2]] == [p["label"] for p in top_two]

    # the pipeline's best label is the model's argmax, named through config.id2label
    features = classifier.feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        logits = classifier.model(**features).logits[0]
    assert top_two[0]["label"] == classifier.model.config.id2label[int(logits.argmax())]
    assert top_two[0]["score"] == pytest.approx(float(logits.softmax(-1).max()), abs=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# The script's data helpers
# ----------------------------------------------------------------------------------------------------------------------


def load_script_module():
    spec = importlib.util.spec_from_file_location("run_audio_classification", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bad_audio_is_refused_or_dropped_with_a_listing(tmp_path):
    script = load_script_module()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(3):
            sf.write(tmp_path / name / f"{index}.wav", tone(440.0, 0.3, rng), SAMPLING_RATE)
    (tmp_path / "a" / "broken.wav").write_bytes(b"not a wav file")
    sf.write(tmp_path / "b" / "tiny.wav", np.zeros(100, dtype=np.float32), SAMPLING_RATE)  # < 400 samples

    splits = script.scan_audio_folder(tmp_path, "audio", "label")
    assert splits["train"].features["label"].names == ["a", "b"]
    data_args = script.DataArguments(dataset_name=str(tmp_path))
    with pytest.raises(ValueError, match=r"(?s)2 of 8 train clips.*broken\.wav.*tiny\.wav.*--skip_bad_audio"):
        script.drop_or_refuse_bad_audio(splits, data_args, 400 / SAMPLING_RATE)
    data_args.skip_bad_audio = True
    kept = script.drop_or_refuse_bad_audio(splits, data_args, 400 / SAMPLING_RATE)
    assert len(kept["train"]) == 6

    # decoding: stereo is averaged to mono and 8 kHz is resampled to 16 kHz
    stereo = np.stack([tone(440.0, 0.5, rng), np.zeros(8000, np.float32)], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo[::2], 8000)
    audio = script.load_audio(str(tmp_path / "stereo.wav"), SAMPLING_RATE)
    assert audio.ndim == 1 and abs(audio.size - 8000) <= 2
    assert np.abs(audio).max() == pytest.approx(np.abs(stereo[:, 0]).max() / 2, rel=0.1)


def test_label_encoder_multi_label_from_separator():
    import datasets

    script = load_script_module()
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"label": ["dog;bark", "cat", "dog"]}),
            "eval": datasets.Dataset.from_dict({"label": ["cat;dog"]}),
        }
    )
    encoder = script.LabelEncoder(splits, "label", ";")
    assert encoder.multi_label and encoder.class_names == ["bark", "cat", "dog"]
    np.testing.assert_array_equal(encoder("dog;bark"), [1.0, 0.0, 1.0])
    single = script.LabelEncoder(splits, "label", None)
    assert not single.multi_label and single("cat") == single.class_names.index("cat")
