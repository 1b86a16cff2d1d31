# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""MatpacForAudioClassification, the local metric modules, the audio-classification pipeline and
examples/run_audio_classification.py (run end to end on generated audio)."""

import csv
import json
import math
from pathlib import Path

import datasets
import evaluate
import numpy as np
import pytest
import run_audio_classification as script
import soundfile as sf
import torch
from huggingface_hub import ModelCard
from matpac_testing import tiny_config
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score
from transformers import AutoConfig, AutoModelForAudioClassification, HfArgumentParser, pipeline

from matpac_hf import (
    METRICS_DIR,
    MatpacFeatureExtractor,
    MatpacForAudioClassification,
    MatpacModel,
    classification_data,
)
from matpac_hf.audio_io import decode_audio
from matpac_hf.classification_data import (
    ClassLabels,
    drop_or_refuse_bad_audio,
    hold_out_split,
    load_audio_dataset,
    load_audio_files,
)


SAMPLING_RATE = 16000
TONE_HZ = {"low": 300.0, "mid": 1200.0, "high": 4000.0}


def head_config(**overrides):
    """The tiny config (tests/matpac_testing.py) with a 3-class head and one block (overrides win)."""
    return tiny_config(**{"num_labels": 3, "num_hidden_layers": 1, **overrides})


def padded_batch(seed: int = 0):
    """Two log-mel clips of 100 and 60 frames, padded to 100 (mask 0 on the padding, junk values under it)."""
    generator = torch.Generator().manual_seed(seed)
    input_values = torch.randn(2, 100, 80, generator=generator)
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
    model = MatpacForAudioClassification(head_config(classifier_pooling="concat")).eval()
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
    model = MatpacForAudioClassification(head_config(classifier_pooling="mean")).eval()
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
    alone = model(input_values[1:, :60]).logits
    torch.testing.assert_close(logits[1:], alone, rtol=1e-5, atol=1e-5)


def test_mean_pooling_refuses_a_single_clip_in_training():
    model = MatpacForAudioClassification(head_config(classifier_pooling="mean")).train()
    with pytest.raises(ValueError, match="at least 2 clips"):
        model(torch.randn(1, 32, 80))
    model.eval()
    assert model(torch.randn(1, 32, 80)).logits.shape == (1, 3)


def test_dropout_sits_before_the_classifier():
    model = MatpacForAudioClassification(head_config(classifier_dropout=0.5))
    assert model.dropout.p == 0.5
    input_values, attention_mask = padded_batch()
    model.train()
    first, second = (model(input_values, attention_mask=attention_mask).logits for _ in range(2))
    assert not torch.allclose(first, second)
    model.eval()
    first, second = (model(input_values, attention_mask=attention_mask).logits for _ in range(2))
    torch.testing.assert_close(first, second)


def test_hidden_states_are_returned_in_frame_layout():
    model = MatpacForAudioClassification(head_config()).eval()
    outputs = model(torch.randn(2, 64, 80), output_hidden_states=True)
    assert len(outputs.hidden_states) == 2  # embeddings + 1 block
    assert outputs.hidden_states[-1].shape == (2, 4, 160)
    assert outputs.loss is None


# ----------------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------------


def test_single_label_loss_is_cross_entropy():
    torch.manual_seed(0)
    model = MatpacForAudioClassification(head_config()).eval()
    labels = torch.tensor([2, 0])
    outputs = model(torch.randn(2, 48, 80), labels=labels)
    assert model.config.problem_type == "single_label_classification"
    torch.testing.assert_close(outputs.loss, torch.nn.functional.cross_entropy(outputs.logits, labels))


def test_multi_label_loss_is_bce_with_logits():
    torch.manual_seed(0)
    model = MatpacForAudioClassification(head_config()).eval()
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    outputs = model(torch.randn(2, 48, 80), labels=targets)  # float targets -> multi-label (transformers' rule)
    assert model.config.problem_type == "multi_label_classification"
    expected = torch.nn.functional.binary_cross_entropy_with_logits(outputs.logits, targets)
    torch.testing.assert_close(outputs.loss, expected)
    # integer multi-hot targets work too once the problem type is set
    torch.testing.assert_close(
        model(torch.randn(2, 48, 80), labels=targets.long()).loss.isfinite(), torch.tensor(True)
    )


@pytest.mark.parametrize("num_labels", [1, 2])
def test_regression_loss_is_mse(num_labels):
    torch.manual_seed(0)
    model = MatpacForAudioClassification(head_config(num_labels=num_labels)).eval()
    targets = torch.randn(2, num_labels)
    if num_labels == 1:
        model.config.problem_type = None  # one output -> regression (transformers' rule)
        targets = targets[:, 0]
    else:
        model.config.problem_type = "regression"
    outputs = model(torch.randn(2, 48, 80), labels=targets)
    assert model.config.problem_type == "regression"
    expected = torch.nn.functional.mse_loss(outputs.logits.reshape(targets.shape), targets)
    torch.testing.assert_close(outputs.loss, expected)


def test_bad_labels_raise_clear_errors():
    model = MatpacForAudioClassification(head_config(problem_type="single_label_classification")).eval()
    with pytest.raises(ValueError, match="multi_label_classification"):
        model(torch.randn(2, 48, 80), labels=torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        model(torch.randn(2, 48, 80), labels=torch.tensor([0, 3]))
    model.config.problem_type = "multi_label_classification"
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        model(torch.randn(2, 48, 80), labels=torch.ones(2, 4))


# ----------------------------------------------------------------------------------------------------------------------
# Freezing, saving, Auto classes
# ----------------------------------------------------------------------------------------------------------------------


def test_freeze_encoder_trains_only_the_head(tmp_path):
    model = MatpacForAudioClassification(head_config(freeze_encoder=True))
    assert not any(p.requires_grad for p in model.matpac.parameters())
    model(torch.randn(2, 48, 80), labels=torch.tensor([0, 1])).loss.backward()
    assert all(p.grad is None for p in model.matpac.parameters())
    assert model.classifier.weight.grad is not None and model.classifier.weight.grad.abs().sum() > 0

    # the choice survives save / load (loading builds fresh, trainable parameters)
    model.save_pretrained(tmp_path)
    reloaded = MatpacForAudioClassification.from_pretrained(tmp_path)
    assert not any(p.requires_grad for p in reloaded.matpac.parameters())
    assert reloaded.classifier.weight.requires_grad

    # the method freezes a full fine-tuning model and records it in the config
    full = MatpacForAudioClassification(head_config())
    assert all(p.requires_grad for p in full.matpac.parameters())
    full.freeze_base_model()
    assert full.config.freeze_encoder and not any(p.requires_grad for p in full.matpac.parameters())


@pytest.mark.parametrize("pooling", ["concat", "mean"])
def test_save_load_round_trip(tmp_path, pooling):
    labels = ["dog", "rain", "siren"]
    config = head_config(
        classifier_pooling=pooling, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)}
    )
    model = MatpacForAudioClassification(config).train()
    model(torch.randn(4, 48, 80))  # updates the BatchNorm running statistics of the "mean" head
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
    encoder = MatpacModel(head_config())
    encoder.save_pretrained(tmp_path)
    model = MatpacForAudioClassification.from_pretrained(tmp_path, num_labels=4)
    assert model.classifier.out_features == 4
    for name, parameter in encoder.state_dict().items():
        torch.testing.assert_close(model.matpac.state_dict()[name], parameter)
    auto = AutoModelForAudioClassification.from_config(head_config())
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
# The example script, end to end (in process), and the pipeline on its output
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
    MatpacModel(head_config()).save_pretrained(root / "tiny_matpac")
    return root


def run_script(*args: str) -> dict:
    """`main(argv)` in this process with small training settings; returns the final evaluation metrics."""
    common = ["--num_train_epochs", "2", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4"]
    common += ["--learning_rate", "1e-3", "--use_cpu", "--seed", "0", "--max_length_seconds", "1.0"]
    common += ["--dataloader_num_workers", "0", "--report_to", "none"]
    return script.main([*common, *map(str, args)])


@pytest.fixture(scope="module")
def single_label_run(generated_data, in_process_hub):
    """Fine-tunes the tiny encoder on the audiofolder with augmentation and pushes it to the local Hub stub."""
    output_dir = generated_data / "single_label_run"
    run_script(
        *("--model_name_or_path", generated_data / "tiny_matpac", "--dataset_name", generated_data / "folder"),
        *("--output_dir", output_dir, "--aug_gain", "0.5", "--aug_noise", "0.5", "--aug_time_shift", "0.5"),
        *("--push_to_hub", "--hub_model_id", "stub-user/matpac-tones"),
    )
    return output_dir


def held_out_clips(splits, label_column: str, fraction: float, stratify: bool = True):
    """The evaluation clips the script holds out (same loader, same split, --seed 0), decoded, with their labels."""
    _, held_out = hold_out_split(splits["train"], fraction, label_column, seed=0, stratify=stratify)
    return [decode_audio(path) for path in held_out["audio" if "audio" in held_out.column_names else "file"]], held_out


def saved_model_logits(output_dir: Path, waveforms) -> np.ndarray:
    model = MatpacForAudioClassification.from_pretrained(output_dir).eval()
    feature_extractor = MatpacFeatureExtractor.from_pretrained(output_dir)
    with torch.no_grad():
        return model(**feature_extractor(waveforms, sampling_rate=SAMPLING_RATE, return_tensors="pt")).logits.numpy()


def test_script_single_label_audiofolder(single_label_run, in_process_hub, generated_data):
    metrics = json.loads((single_label_run / "eval_results.json").read_text())
    config = json.loads((single_label_run / "config.json").read_text())
    assert (
        sorted(config["id2label"].values()) == sorted(TONE_HZ) and config.get("use_weighted_layer_sum", False) is False
    )
    assert config["problem_type"] == "single_label_classification"
    state = json.loads((single_label_run / "trainer_state.json").read_text())
    assert [round(entry["epoch"]) for entry in state["log_history"] if "eval_accuracy" in entry] == [1, 2]
    assert state["best_metric"] is not None  # load_best_model_at_end tracked the best checkpoint

    # the reported accuracy is the saved model's on the held-out clips (whole clips, through the feature extractor)
    waveforms, held_out = held_out_clips(load_audio_dataset(str(generated_data / "folder")), "label", 0.15)
    predicted = [
        config["id2label"][str(index)] for index in saved_model_logits(single_label_run, waveforms).argmax(-1)
    ]
    assert len(held_out) == 4
    assert metrics["eval_accuracy"] == pytest.approx(np.mean(np.array(predicted) == held_out["label"]))
    assert math.isfinite(metrics["eval_loss"])

    card = (single_label_run / "README.md").read_text()
    assert "pipeline_tag: audio-classification" in card and "library_name: transformers" in card
    assert "Quelennec" in card and f"| accuracy | {metrics['eval_accuracy']:.4f} |" in card
    assert str(generated_data) not in card  # no local paths
    assert (single_label_run / "preprocessor_config.json").exists()
    pushed = in_process_hub.files("stub-user/matpac-tones")
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(pushed)
    pushed_card = in_process_hub.read_blob(pushed["README.md"].sha256).decode()
    assert pushed_card == card and "stub-user/matpac-tones" in pushed_card


def test_script_multi_label_csv_with_weighted_layer_sum_and_frozen_encoder(generated_data):
    output_dir = generated_data / "multi_label_run"
    metrics = run_script(
        *("--config_overrides", "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64"),
        *("--train_file", generated_data / "tags.csv", "--audio_column_name", "file", "--label_column_name", "tags"),
        *("--label_separator", ";", "--train_val_split", "0.25", "--output_dir", output_dir),
        *("--classifier_pooling", "mean", "--use_weighted_layer_sum", "--freeze_encoder"),
    )
    assert 0.0 <= metrics["eval_mean_average_precision"] <= 1.0 and 0.0 <= metrics["eval_roc_auc"] <= 1.0
    config = json.loads((output_dir / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["classifier_pooling"] == "mean"
    assert config["use_weighted_layer_sum"] is True and config["freeze_encoder"] is True
    assert sorted(config["id2label"].values()) == sorted(TONE_HZ)
    # the reported mAP is the saved model's sigmoid scores on the held-out clips (random hold-out: multi-label)
    splits = load_audio_files({"train": str(generated_data / "tags.csv")}, "file")
    waveforms, held_out = held_out_clips(splits, "tags", 0.25, stratify=False)
    labels = ClassLabels([config["id2label"][str(index)] for index in range(3)], multi_label=True, separator=";")
    targets = np.stack([labels(value) for value in held_out["tags"]]).astype(np.int64)
    scores = 1 / (1 + np.exp(-saved_model_logits(output_dir, waveforms)))
    expected = evaluate.load(str(METRICS_DIR / "mean_average_precision")).compute(
        predictions=scores, references=targets
    )
    assert len(held_out) == 6 and metrics["eval_mean_average_precision"] == pytest.approx(
        expected["mean_average_precision"], abs=1e-6
    )

    # frozen encoder: only the layer weights and the head train
    model = MatpacForAudioClassification.from_pretrained(output_dir)
    initial = torch.full_like(model.layer_weights, 1 / model.layer_weights.numel())  # uniform at initialisation
    assert model.layer_weights.shape == (3,) and not torch.allclose(model.layer_weights, initial)
    assert not any(p.requires_grad for p in model.matpac.parameters()) and model.layer_weights.requires_grad

    classifier = pipeline("audio-classification", model=str(output_dir))
    clip = tone(TONE_HZ["mid"], 1.0, np.random.default_rng(1))
    predictions = classifier(clip, top_k=None)
    features = classifier.feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    with torch.no_grad():
        expected = torch.sigmoid(classifier.model(**features).logits[0])  # multi-label: independent sigmoid scores
    by_label = {p["label"]: p["score"] for p in predictions}
    for index, name in classifier.model.config.id2label.items():
        assert by_label[name] == pytest.approx(float(expected[index]), abs=1e-5)


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
# Data loading (matpac_hf.classification_data) and the script's checks
# ----------------------------------------------------------------------------------------------------------------------


def test_audio_folders_load_undecoded_without_torchcodec(tmp_path):
    rng = np.random.default_rng(0)
    for split, label in (("train", "dog"), ("train", "rain"), ("validation", "dog"), ("validation", "rain")):
        (tmp_path / "split" / split / label).mkdir(parents=True)
        sf.write(tmp_path / "split" / split / label / "0.wav", tone(440.0, 0.1, rng), SAMPLING_RATE)
    splits = load_audio_dataset(str(tmp_path / "split"))
    assert sorted(splits) == ["train", "validation"] and splits["train"]["label"] == ["dog", "rain"]
    assert splits["train"]["audio"] == [str(tmp_path / "split" / "train" / name / "0.wav") for name in ("dog", "rain")]

    (tmp_path / "meta" / "clips").mkdir(parents=True)
    sf.write(tmp_path / "meta" / "clips" / "a.wav", tone(440.0, 0.1, rng), SAMPLING_RATE)
    (tmp_path / "meta" / "metadata.csv").write_text("file_name,label,fold\nclips/a.wav,dog,3\n")
    meta = load_audio_dataset(str(tmp_path / "meta"))["train"]
    assert meta[0] == {"audio": str(tmp_path / "meta" / "clips" / "a.wav"), "label": "dog", "fold": 3}

    (tmp_path / "flat").mkdir()
    sf.write(tmp_path / "flat" / "a.wav", tone(440.0, 0.1, rng), SAMPLING_RATE)
    with pytest.raises(ValueError, match="not inside class folders"):
        load_audio_dataset(str(tmp_path / "flat"))


def test_bad_audio_is_refused_or_dropped_and_counted(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for index in range(3):
            sf.write(tmp_path / name / f"{index}.wav", tone(440.0, 0.3, rng), SAMPLING_RATE)
    (tmp_path / "a" / "broken.wav").write_bytes(b"not a wav file")
    sf.write(tmp_path / "b" / "tiny.wav", np.zeros(100, dtype=np.float32), SAMPLING_RATE)  # < 400 samples
    train = load_audio_dataset(str(tmp_path))["train"]
    assert len(train) == 8

    # "error" tries every clip first and names every bad one in one error, with the count
    with pytest.raises(ValueError, match=r"Cannot decode 2 clip\(s\)") as refused:
        drop_or_refuse_bad_audio(train, "audio", SAMPLING_RATE, min_samples=400, bad_audio="error")
    assert "broken.wav" in str(refused.value) and "tiny.wav: shorter than 400 samples" in str(refused.value)
    assert "--bad_audio skip" in str(refused.value)
    with caplog.at_level("WARNING"):
        kept = drop_or_refuse_bad_audio(train, "audio", SAMPLING_RATE, min_samples=400, bad_audio="skip")
    assert len(kept) == 6 and not any(path.endswith(("broken.wav", "tiny.wav")) for path in kept["audio"])
    assert "dropped 2 of 8" in caplog.text and "tiny.wav: shorter than 400 samples" in caplog.text
    # the script applies the policy before training: the default refuses, naming the file
    with pytest.raises(ValueError, match=r"broken\.wav"):
        script.main(["--dataset_name", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--use_cpu"])


def test_m4a_clips_in_class_folders_are_kept_and_reported_with_the_install(tmp_path, monkeypatch):
    """datasets' audiofolder builder skips .m4a / .aac; the class-folder loader lists them, and without torchcodec the
    bad-file check names them with the install that decodes them."""
    from matpac_hf import audio_io

    monkeypatch.setattr(audio_io, "torchcodec_error", lambda: "torchcodec is not installed")
    monkeypatch.setattr(classification_data, "torchcodec_error", lambda: "torchcodec is not installed")
    rng = np.random.default_rng(0)
    for split in ("train", "validation"):
        for label in ("dog", "rain"):
            (tmp_path / split / label).mkdir(parents=True)
            sf.write(tmp_path / split / label / "0.wav", tone(440.0, 0.3, rng), SAMPLING_RATE)
    (tmp_path / "train" / "dog" / "1.m4a").write_bytes(bytes(200))
    (tmp_path / "train" / "rain" / "2.aac").write_bytes(bytes(200))
    splits = load_audio_dataset(str(tmp_path))
    assert sorted(Path(path).name for path in splits["train"]["audio"]) == ["0.wav", "0.wav", "1.m4a", "2.aac"]
    assert splits["train"]["label"] == ["dog", "dog", "rain", "rain"] and len(splits["validation"]) == 2
    with pytest.raises(ValueError, match=r"Cannot decode 2 clip\(s\)") as refused:
        drop_or_refuse_bad_audio(splits["train"], "audio", SAMPLING_RATE, bad_audio="error")
    assert "1.m4a" in str(refused.value) and "2.aac" in str(refused.value)
    assert "pip install torchcodec" in str(refused.value)


def test_class_labels_multi_label_from_separator():
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"label": ["dog;bark", "cat", "dog"]}),
            "eval": datasets.Dataset.from_dict({"label": ["cat;dog"]}),
        }
    )
    encoder = ClassLabels.from_dataset(splits, "label", ";")
    assert encoder.multi_label and encoder.names == ["bark", "cat", "dog"]
    np.testing.assert_array_equal(encoder("dog;bark"), [1.0, 0.0, 1.0])
    single = ClassLabels.from_dataset(splits, "label")
    assert not single.multi_label and single("cat") == single.names.index("cat")
    listed = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"label": [["b", "a"], ["c"]]})})
    np.testing.assert_array_equal(ClassLabels.from_dataset(listed, "label")(["c", "a"]), [1.0, 0.0, 1.0])


def test_class_labels_sort_integer_labels_numerically(caplog):
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"label": [11, 2, 0, 10, 1, 3, 4, 5, 6, 7, 8, 9]}),
            "eval": datasets.Dataset.from_dict({"label": [10, 2]}),
        }
    )
    with caplog.at_level("INFO", logger="matpac_hf.classification_data"):
        encoder = ClassLabels.from_dataset(splits, "label")
    assert encoder.names == [str(value) for value in range(12)]  # not '0', '1', '10', '11', '2', ...
    assert [encoder(value) for value in (0, 2, 10, 11)] == [0, 2, 10, 11]  # identity mapping
    assert "'10' -> 10" in caplog.text and "'2' -> 2" in caplog.text
    config = head_config(num_labels=12)
    script.configure_for_dataset(config, script.ModelArguments(), encoder.names, multi_label=False)
    assert config.id2label[2] == "2" and config.id2label[10] == "10" and config.label2id["11"] == 11

    # integer strings split on a separator (multi-label) sort the same way; other names sort as strings
    multi = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"label": ["2;10", "1", "3;20"]})})
    multi = ClassLabels.from_dataset(multi, "label", ";")
    assert multi.names == ["1", "2", "3", "10", "20"]
    np.testing.assert_array_equal(multi("2;10"), [0, 1, 0, 1, 0])
    named = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"label": ["b10", "b2", "a"]})})
    assert ClassLabels.from_dataset(named, "label").names == ["a", "b10", "b2"]
    class_label = datasets.Dataset.from_dict({"label": [1, 0]}).cast_column(
        "label", datasets.ClassLabel(names=["x", "y"])
    )
    assert ClassLabels.from_dataset({"train": class_label}, "label").names == ["x", "y"]

    floats = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"label": [0.5, 1.5]})})
    with pytest.raises(ValueError, match="not regression"):
        ClassLabels.from_dataset(floats, "label")


@pytest.mark.parametrize("flag", ["freeze_encoder", "use_weighted_layer_sum"])
def test_head_flags_are_tri_state(tmp_path, flag):
    parser = HfArgumentParser(script.ModelArguments)
    parse = lambda *argv: getattr(parser.parse_args_into_dataclasses(list(argv))[0], flag)  # noqa: E731
    assert parse() is None and parse(f"--{flag}") is True
    assert parse(f"--{flag}", "False") is False and parse(f"--{flag}", "true") is True

    labels = ["dog", "rain", "siren"]
    label_maps = {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    MatpacForAudioClassification(head_config(**{flag: True}, **label_maps)).save_pretrained(tmp_path)
    for given, expected in ((None, True), (True, True), (False, False)):
        config = AutoConfig.from_pretrained(tmp_path)
        script.configure_for_dataset(config, script.ModelArguments(**{flag: given}), labels, multi_label=False)
        assert getattr(config, flag) is expected
    model = MatpacForAudioClassification.from_pretrained(tmp_path, config=config)  # the explicit False wins
    if flag == "freeze_encoder":  # a checkpoint saved frozen fine-tunes the whole model
        assert all(p.requires_grad for p in model.parameters())
    else:
        assert not hasattr(model, "layer_weights") or model.layer_weights is None


def test_classifier_checkpoint_with_other_labels_warns_or_refuses(tmp_path, caplog):
    labels = ["dog", "rain", "siren"]
    MatpacForAudioClassification(
        head_config(id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    ).save_pretrained(tmp_path)

    def configure(class_names, **model_args):
        config = AutoConfig.from_pretrained(tmp_path)
        with caplog.at_level("WARNING", logger="matpac_hf.classification_data"):
            script.configure_for_dataset(config, script.ModelArguments(**model_args), class_names, multi_label=False)
        return config

    configure(labels)
    assert caplog.text == ""  # same labels, same order: the head is reused as trained
    config = configure(["cat", "dog", "rain"])
    assert "0: 'dog' -> 'cat'" in caplog.text and "2: 'siren' -> 'rain'" in caplog.text and "3 outputs" in caplog.text
    assert config.id2label == {0: "cat", 1: "dog", 2: "rain"}
    with pytest.raises(ValueError, match=r"3 classes, the dataset 2.*--ignore_mismatched_sizes"):
        configure(["cat", "dog"])
    caplog.clear()
    configure(["cat", "dog"], ignore_mismatched_sizes=True)
    assert "re-initialised" in caplog.text
    # an encoder checkpoint has no classifier to compare with
    MatpacModel(head_config()).save_pretrained(tmp_path / "encoder")
    caplog.clear()
    config = AutoConfig.from_pretrained(tmp_path / "encoder")
    script.configure_for_dataset(config, script.ModelArguments(), ["cat", "dog"], multi_label=False)
    assert caplog.text == "" and config.num_labels == 2


def test_data_source_conflicts_and_feature_extractor_errors(tmp_path):
    with pytest.raises(ValueError, match="not both"):
        script.DataArguments(dataset_name="some/dataset", train_file="train.csv")
    with pytest.raises(ValueError, match="--dataset_name .* or --train_file"):
        script.DataArguments()
    with pytest.raises(ValueError, match="--validation_file .* needs --train_file"):
        script.DataArguments(dataset_name="some/dataset", validation_file="valid.csv")

    (tmp_path / "empty").mkdir()
    MatpacModel(head_config()).save_pretrained(tmp_path / "encoder")  # no preprocessor_config.json
    config = head_config()
    with pytest.raises(ValueError, match="--feature_extractor_name .*empty.* could not be loaded"):
        script.load_feature_extractor(script.ModelArguments(feature_extractor_name=str(tmp_path / "empty")), config)
    # no extractor given and none in the checkpoint: the config's front end
    built = script.load_feature_extractor(script.ModelArguments(model_name_or_path=str(tmp_path / "encoder")), config)
    assert isinstance(built, MatpacFeatureExtractor)
    MatpacFeatureExtractor(padding_value=-1.0).save_pretrained(tmp_path / "extractor")
    model_args = script.ModelArguments(
        model_name_or_path=str(tmp_path / "encoder"), feature_extractor_name=str(tmp_path / "extractor")
    )
    given = script.load_feature_extractor(model_args, config)
    assert given.padding_value == -1.0


def test_held_out_evaluation_split_is_stratified_for_string_labels(caplog):
    labels = ["dog"] * 10 + ["rain"] * 10 + ["siren"] * 10
    train = datasets.Dataset.from_dict({"audio": [f"{i}.wav" for i in range(30)], "label": labels})
    kept, held_out = hold_out_split(train, 0.3, "label", seed=0)
    assert sorted(held_out["label"]) == ["dog"] * 3 + ["rain"] * 3 + ["siren"] * 3
    assert kept.column_names == ["audio", "label"] and kept.features == train.features
    assert caplog.text == ""

    # a class with one clip cannot be stratified: a random hold-out, with a warning
    lonely = datasets.Dataset.from_dict({"audio": [f"{i}.wav" for i in range(31)], "label": labels + ["cat"]})
    with caplog.at_level("WARNING", logger="matpac_hf.classification_data"):
        kept, held_out = hold_out_split(lonely, 0.3, "label", seed=0)
    assert "Cannot hold out a class-stratified evaluation split" in caplog.text
    assert len(kept) + len(held_out) == 31


@pytest.mark.parametrize("pooling", ["concat", "mean"])
def test_model_card_reads_sizes_from_the_config_and_records_the_setup(tmp_path, pooling):
    config = head_config(classifier_pooling=pooling, freeze_encoder=True, classifier_dropout=0.1)
    data_args = script.DataArguments(dataset_name="some/dataset", aug_gain=0.5, aug_time_shift=0.25)
    training_args = script.AudioClassificationTrainingArguments(output_dir=str(tmp_path), report_to="none")
    labels = ClassLabels(["a", "b"], multi_label=False)
    _, augment = script.build_augmentation(data_args)
    metrics = {"eval_accuracy": 0.5, "eval_runtime": 1.0}
    script.write_model_card(
        script.ModelArguments(), data_args, training_args, config, labels, "the 'validation' split", metrics, augment
    )
    card = (tmp_path / "README.md").read_text()
    assert "3840" not in card and "768-d" not in card
    expected = "mean of the 32-d tokens" if pooling == "mean" else "a linear layer on the 160-d clip embedding"
    assert expected in card and "(encoder frozen: linear probe)" in card
    for row in (
        f"| classifier_pooling | {pooling} |",
        "| freeze_encoder | True |",
        "| use_weighted_layer_sum | False |",
        "| classifier_dropout | 0.1 |",
        "| aug_gain | 0.5 |",
        "| aug_gain_db | 6.0 |",
        "| aug_time_shift | 0.25 |",
        "| accuracy | 0.5000 |",
    ):
        assert row in card, row
    assert "aug_noise" not in card and "aug_pitch_shift" not in card and "runtime" not in card  # off: not listed
    metadata = ModelCard(card).data.to_dict()  # the model-index holds the evaluation results
    (result,) = metadata["model-index"][0]["results"]
    assert result["metrics"] == [{"type": "accuracy", "value": 0.5}]
    assert result["dataset"] == {"type": "some/dataset", "name": "some/dataset", "split": "the 'validation' split"}
    assert script.build_augmentation(script.DataArguments(dataset_name="d")) == (None, {"augmentation": "none"})
    with pytest.raises(ValueError, match="--aug_noise_snr_db must be 'min,max'"):
        script.build_augmentation(script.DataArguments(dataset_name="d", aug_noise=0.5, aug_noise_snr_db="40,10"))


def test_pipeline_workaround_for_files_at_other_rates(tmp_path):
    """transformers' audio-classification pipeline needs torchaudio to resample and ffmpeg to read files; the README's
    workaround decodes with matpac_hf.audio_io.decode_audio (soundfile + soxr) and passes a 16 kHz array."""
    import soxr

    torch.manual_seed(0)
    MatpacForAudioClassification(head_config()).save_pretrained(tmp_path / "model")
    MatpacFeatureExtractor().save_pretrained(tmp_path / "model")
    classifier = pipeline("audio-classification", model=str(tmp_path / "model"))

    clip = (0.3 * np.sin(2 * np.pi * TONE_HZ["mid"] * np.arange(SAMPLING_RATE) / SAMPLING_RATE)).astype(np.float32)
    clip_44k = soxr.resample(clip, SAMPLING_RATE, 44100).astype(np.float32)
    sf.write(tmp_path / "clip.wav", np.stack([1.5 * clip_44k, 0.5 * clip_44k], axis=1), 44100, subtype="FLOAT")

    waveform = decode_audio(str(tmp_path / "clip.wav"))
    assert waveform.dtype == np.float32 and waveform.shape == (SAMPLING_RATE,)  # mono, 16 kHz
    np.testing.assert_allclose(waveform[800:-800], clip[800:-800], atol=1e-4)  # channel mean, resampled back
    from_file = classifier(waveform, top_k=None)
    reference = classifier(clip, top_k=None)
    assert [p["label"] for p in from_file] == [p["label"] for p in reference]
    for got, expected in zip(from_file, reference):
        assert got["score"] == pytest.approx(expected["score"], abs=1e-4)


@pytest.mark.parametrize("pooling", ["concat", "mean"])
def test_frozen_encoder_runs_once_and_trains_the_head_as_the_full_model_does(
    generated_data, tmp_path, monkeypatch, pooling, recwarn
):
    """--freeze_encoder without augmentation: the encoder embeds each clip once (not once per epoch), and the run gives
    the metrics and the saved model of the run that encodes every batch."""
    calls = []
    original_forward = MatpacModel.forward

    def counting_forward(self, input_values, *args, **kwargs):
        calls.append(input_values.shape[0])
        return original_forward(self, input_values, *args, **kwargs)

    monkeypatch.setattr(MatpacModel, "forward", counting_forward)
    flags = ["--model_name_or_path", generated_data / "tiny_matpac", "--dataset_name", generated_data / "folder"]
    flags += ["--freeze_encoder", "--classifier_pooling", pooling, "--max_length_seconds", "2.0"]
    flags += ["--num_train_epochs", "3", "--save_strategy", "no", "--load_best_model_at_end", "False"]
    fast = run_script(*flags, "--output_dir", tmp_path / "fast")
    assert sum(calls) == 24  # 24 clips, each encoded once over 3 epochs and 4 evaluations
    assert not [w for w in recwarn.list if "pin_memory" in str(w.message)]

    calls.clear()
    monkeypatch.setattr(script, "why_the_encoder_runs_every_epoch", lambda *args: "compared")
    slow = run_script(*flags, "--output_dir", tmp_path / "slow")
    assert sum(calls) > 3 * 20  # every epoch and evaluation runs the encoder again
    assert fast["eval_accuracy"] == slow["eval_accuracy"]
    assert fast["eval_loss"] == pytest.approx(slow["eval_loss"], abs=1e-5)
    fast_state = MatpacForAudioClassification.from_pretrained(tmp_path / "fast").state_dict()
    slow_state = MatpacForAudioClassification.from_pretrained(tmp_path / "slow").state_dict()
    assert fast_state.keys() == slow_state.keys()
    for name, tensor in fast_state.items():
        torch.testing.assert_close(tensor, slow_state[name], atol=1e-5, rtol=1e-4, msg=name)


def test_frozen_encoder_runs_every_batch_when_clips_are_cropped_or_augmented(generated_data, tmp_path, caplog):
    flags = ["--model_name_or_path", generated_data / "tiny_matpac", "--dataset_name", generated_data / "folder"]
    flags += [
        "--freeze_encoder",
        "--num_train_epochs",
        "1",
        "--save_strategy",
        "no",
        "--load_best_model_at_end",
        "False",
    ]
    with caplog.at_level("INFO"):
        run_script(*flags, "--output_dir", tmp_path / "cropped")  # clips up to 1.5 s, cropped to 1 s
    assert "Frozen encoder run on every batch: some training clips are longer than --max_length_seconds" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO"):
        run_script(*flags, "--max_length_seconds", "2", "--aug_gain", "0.5", "--output_dir", tmp_path / "augmented")
    assert "Frozen encoder run on every batch: augmentation" in caplog.text
