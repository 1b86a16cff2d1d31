# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The Hugging Face audio-classification tutorial recipe (https://huggingface.co/docs/transformers/tasks/audio_classification)
run verbatim on a tiny MATPAC model and a tiny synthetic `datasets` audio dataset, plus one focused test per step that
would break without the feature extractor's transformers contract:

- `feature_extractor(arrays, sampling_rate=..., max_length=16000, truncation=True)`: a TypeError;
- `map(..., batched=True, batch_size=16)` without padding to one length, then `Trainer(processing_class=...)` (so
  `DataCollatorWithPadding`): "Unable to convert output 'input_values' ... inhomogeneous shape";
- `attention_mask` only in the map batches whose clips differed in length;
- `pipeline("audio-classification", batch_size=2)` on clips of different lengths: a RuntimeError in transformers'
  pipeline padding (the old `(80, frames)` layout was padded on the mel axis).

Decoding: without torchcodec, an `Audio(decode=False)` column plus `matpac_hf.audio_io.decode_audio_column` (soundfile +
soxr); with torchcodec (and FFmpeg's shared libraries), the tutorial's own `cast_column("audio", Audio(16000))`.
"""

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Audio, ClassLabel, Dataset, DatasetDict
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    Trainer,
    TrainingArguments,
    pipeline,
    set_seed,
)

import matpac_hf
from matpac_hf.audio_io import decode_audio, decode_audio_column


SAMPLING_RATE = 16000
LABELS = ["low", "high"]  # the two classes: a low or a high harmonic tone (far apart on the mel axis)
PITCH_HZ = {"low": 220.0, "high": 1760.0}


def tone_clip(label: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(num_samples) / SAMPLING_RATE
    f0 = PITCH_HZ[label] * rng.uniform(0.95, 1.05)
    clip = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
    return (0.2 * clip + 0.02 * rng.standard_normal(num_samples)).astype(np.float32)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    """40 wav files, 0.3 s to 1.6 s long (so some are cut by max_length=16000), labels alternating; the first 16 clips
    are all 1.6 s long, so the first map batch of 16 holds clips of one length only."""
    folder = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for index in range(40):
        label = LABELS[index % 2]
        num_samples = 25600 if index < 16 else int(rng.integers(4800, 25600))
        path = folder / f"clip_{index:02d}.wav"
        sf.write(path, tone_clip(label, num_samples, rng), SAMPLING_RATE, subtype="FLOAT")
        paths.append(str(path))
        labels.append(label)
    return paths, labels


def audio_dataset(audio_files) -> Dataset:
    """A `datasets` dataset with an undecoded `Audio` column (`{"bytes", "path"}`) and a `ClassLabel` column."""
    paths, labels = audio_files
    dataset = Dataset.from_dict({"audio": paths, "label": [LABELS.index(label) for label in labels]})
    dataset = dataset.cast_column("label", ClassLabel(names=LABELS))
    return dataset.cast_column("audio", Audio(decode=False))


def decoded(dataset: Dataset) -> Dataset:
    """The decoding path that needs no torchcodec: the package's one-line transform (decodes on access)."""
    return dataset.with_transform(decode_audio_column("audio"))


def decoded_by_map(dataset: Dataset) -> Dataset:
    """The same transform through `map`, decoding once and storing the arrays (`features=` keeps datasets from
    re-encoding the column as `Audio`, which needs torchcodec)."""
    decode = decode_audio_column("audio")
    return dataset.map(decode, batched=True, features=decode.features(dataset.features)).with_format("numpy")


def preprocess_with(feature_extractor):
    def preprocess_function(examples):  # the tutorial's preprocessing, verbatim
        audio_arrays = [x["array"] for x in examples["audio"]]
        inputs = feature_extractor(
            audio_arrays, sampling_rate=feature_extractor.sampling_rate, max_length=16000, truncation=True
        )
        return inputs

    return preprocess_function


def encode(dataset: Dataset, feature_extractor, batch_size: int = 16) -> Dataset:
    return dataset.map(preprocess_with(feature_extractor), remove_columns="audio", batched=True, batch_size=batch_size)


@pytest.fixture(scope="module")
def classifier(tiny_matpac_folder):
    """The tiny pretrained encoder with a new (seeded) 2-class head, in eval mode."""
    torch.manual_seed(0)
    model = AutoModelForAudioClassification.from_pretrained(tiny_matpac_folder, num_labels=len(LABELS))
    return model.eval()


def logits_one_by_one(model, feature_extractor, clips) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [
                model(**feature_extractor(clip, sampling_rate=SAMPLING_RATE, return_tensors="pt")).logits
                for clip in clips
            ]
        )


# ----------------------------------------------------------------------------------------------------------------------
# The steps that used to break, one by one
# ----------------------------------------------------------------------------------------------------------------------


def test_tutorial_preprocessing_truncates_to_max_length_in_samples(tiny_matpac_folder, audio_files):
    feature_extractor = AutoFeatureExtractor.from_pretrained(tiny_matpac_folder)
    encoded = encode(decoded(audio_dataset(audio_files)), feature_extractor)
    assert encoded.column_names == ["label", "input_values", "attention_mask"]
    frames = [sum(mask) for mask in encoded["attention_mask"]]
    durations = [sf.info(path).frames for path in audio_files[0]]
    assert frames == [feature_extractor.num_frames(min(n, 16000)) for n in durations]  # cut at 16000 samples = 98
    assert max(frames) == 98 and min(frames) < 98


def test_every_row_gets_an_attention_mask(tiny_matpac_folder, audio_files):
    """The first map batch holds 16 clips of one length (no padding needed) and still stores a mask per row, so the
    collator can pad it with the rows of the other batches."""
    feature_extractor = AutoFeatureExtractor.from_pretrained(tiny_matpac_folder)

    def preprocess_function(examples):
        return feature_extractor([x["array"] for x in examples["audio"]], sampling_rate=SAMPLING_RATE)

    dataset = decoded_by_map(audio_dataset(audio_files))
    encoded = dataset.map(preprocess_function, remove_columns="audio", batched=True, batch_size=16).with_format(None)
    assert encoded.column_names == ["label", "input_values", "attention_mask"]
    for row in encoded:
        assert len(row["attention_mask"]) == len(row["input_values"])
    assert [sum(encoded[i]["attention_mask"]) for i in range(16)] == [158] * 16  # 1.6 s each: nothing padded
    assert min(sum(row["attention_mask"]) for row in encoded) < 158


def test_trainer_collator_pads_rows_of_different_map_batches(tiny_matpac_folder, audio_files, classifier, tmp_path):
    """`map(batched=True, batch_size=16)` without padding to one length: each map batch is padded to its own longest
    clip, so rows of different map batches differ in length; `Trainer(processing_class=feature_extractor)` collates
    them with `DataCollatorWithPadding`, and every clip of the padded batch gets the logits it gets alone."""
    feature_extractor = AutoFeatureExtractor.from_pretrained(tiny_matpac_folder)
    dataset = decoded(audio_dataset(audio_files).select(range(16, 40)))  # clips of mixed lengths in every map batch

    def preprocess_function(examples):
        return feature_extractor([x["array"] for x in examples["audio"]], sampling_rate=SAMPLING_RATE)

    encoded = dataset.map(preprocess_function, remove_columns="audio", batched=True, batch_size=16)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = Trainer(model=classifier, args=args, processing_class=feature_extractor)
    indices = (4, 21, 9)  # from map batches 1, 2 and 1
    rows = [encoded[i] for i in indices]
    batch = trainer.data_collator(rows)
    lengths = [len(row["input_values"]) for row in rows]  # frames
    assert lengths[0] == lengths[2] != lengths[1]
    assert batch["input_values"].shape == (3, max(lengths), 80)
    assert batch["labels"].tolist() == [row["label"] for row in rows]
    with torch.no_grad():
        batched = classifier(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits
    clips = [dataset[i]["audio"]["array"] for i in indices]
    torch.testing.assert_close(batched, logits_one_by_one(classifier, feature_extractor, clips), atol=1e-5, rtol=0)


def test_audio_classification_pipeline_batches_mixed_lengths(tiny_matpac_folder, audio_files, classifier, tmp_path):
    classifier.save_pretrained(tmp_path)
    AutoFeatureExtractor.from_pretrained(tiny_matpac_folder).save_pretrained(tmp_path)
    audio_classifier = pipeline("audio-classification", model=str(tmp_path))
    clips = [decode_audio(path) for path in audio_files[0][14:20]]  # 1.6 s, 1.6 s, then shorter clips
    batched = audio_classifier(clips, batch_size=2)
    single = [audio_classifier(clip) for clip in clips]
    expected = torch.softmax(logits_one_by_one(classifier, audio_classifier.feature_extractor, clips), dim=-1)
    for clip_index, (from_batch, alone) in enumerate(zip(batched, single)):
        assert [item["label"] for item in from_batch] == [item["label"] for item in alone]
        for item, item_alone in zip(from_batch, alone):
            assert item["score"] == pytest.approx(item_alone["score"], abs=1e-5)
            label_index = classifier.config.label2id[item["label"]]
            assert item["score"] == pytest.approx(expected[clip_index, label_index].item(), abs=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# The whole recipe
# ----------------------------------------------------------------------------------------------------------------------


def run_tutorial_recipe(minds: DatasetDict, model_folder, output_dir):
    """The tutorial's code from the label maps to `trainer.evaluate()`, with a tiny model's settings (epochs, batch
    sizes, learning rate) and without `push_to_hub`."""
    import evaluate

    set_seed(0)  # not in the tutorial: makes the new classifier head (drawn in from_pretrained) reproducible
    labels = minds["train"].features["label"].names
    label2id, id2label = dict(), dict()
    for i, label in enumerate(labels):
        label2id[label] = str(i)
        id2label[str(i)] = label

    feature_extractor = AutoFeatureExtractor.from_pretrained(model_folder)

    def preprocess_function(examples):
        audio_arrays = [x["array"] for x in examples["audio"]]
        inputs = feature_extractor(
            audio_arrays, sampling_rate=feature_extractor.sampling_rate, max_length=16000, truncation=True
        )
        return inputs

    encoded_minds = minds.map(preprocess_function, remove_columns="audio", batched=True, batch_size=16)

    accuracy = evaluate.load(str(matpac_hf.METRICS_DIR / "accuracy"))

    def compute_metrics(eval_pred):
        predictions = np.argmax(eval_pred.predictions, axis=1)
        return accuracy.compute(predictions=predictions, references=eval_pred.label_ids)

    num_labels = len(id2label)
    model = AutoModelForAudioClassification.from_pretrained(
        model_folder, num_labels=num_labels, label2id=label2id, id2label=id2label
    )
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        eval_strategy="epoch",
        save_strategy="epoch",
        learning_rate=1e-3,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        per_device_eval_batch_size=8,
        num_train_epochs=4,
        warmup_steps=0.1,
        logging_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        push_to_hub=False,
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=encoded_minds["train"],
        eval_dataset=encoded_minds["test"],
        processing_class=feature_extractor,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    return trainer, trainer.evaluate(), encoded_minds


def check_recipe_results(trainer, metrics, encoded_minds, minds, output_dir):
    # evaluation through the collator equals the clips featurised and classified one by one
    model = trainer.model.eval()
    feature_extractor = trainer.processing_class
    test_clips = [example["audio"]["array"][:16000] for example in minds["test"]]
    logits = logits_one_by_one(model, feature_extractor, test_clips)
    references = np.asarray(encoded_minds["test"]["label"])
    accuracy = float((logits.argmax(-1).numpy() == references).mean())
    assert metrics["eval_accuracy"] == pytest.approx(accuracy)
    predictions = trainer.predict(encoded_minds["test"]).predictions
    np.testing.assert_allclose(predictions, logits.numpy(), atol=1e-5, rtol=0)
    # the two tones are learnt (a random head scores about 0.5)
    print(f"tutorial recipe: eval_accuracy {metrics['eval_accuracy']:.3f}, eval_loss {metrics['eval_loss']:.4f}")
    assert metrics["eval_accuracy"] >= 0.9, metrics

    # the tutorial's inference step, batched over clips of different lengths
    trainer.save_model(output_dir / "final")
    audio_classifier = pipeline("audio-classification", model=str(output_dir / "final"))
    assert audio_classifier.model.config.id2label == {0: "low", 1: "high"}
    clips = test_clips[:4] + [example["audio"]["array"] for example in minds["test"]][4:8]  # uncut and cut lengths
    assert len({len(clip) for clip in clips}) > 2
    batched = audio_classifier(clips, batch_size=2)
    alone = [audio_classifier(clip) for clip in clips]
    assert [[item["label"] for item in result] for result in batched] == [
        [item["label"] for item in result] for result in alone
    ]
    for result, result_alone in zip(batched, alone):
        assert [item["score"] for item in result] == pytest.approx([item["score"] for item in result_alone], abs=1e-5)


def test_tutorial_recipe_end_to_end_without_torchcodec(tiny_matpac_folder, audio_files, tmp_path):
    """`Audio(decode=False)` + `decode_audio_column` decode with soundfile; the rest is the tutorial's code."""
    minds = audio_dataset(audio_files).train_test_split(test_size=0.25, seed=0)
    minds = DatasetDict({split: decoded(dataset) for split, dataset in minds.items()})
    trainer, metrics, encoded_minds = run_tutorial_recipe(minds, tiny_matpac_folder, tmp_path)
    check_recipe_results(trainer, metrics, encoded_minds, minds, tmp_path)


def test_tutorial_recipe_with_torchcodec_cast_column(tiny_matpac_folder, audio_files, tmp_path):
    """The tutorial's own decoding, `cast_column("audio", Audio(sampling_rate=16_000))`, needs torchcodec and FFmpeg's
    shared libraries (CPU build: `pip install torchcodec==0.13.0`, Debian `libavcodec* libavformat* libavutil*
    libswresample*`); skipped where they are not installed."""
    pytest.importorskip("torchcodec", reason="torchcodec (and FFmpeg's libraries) are not installed")
    minds = audio_dataset(audio_files).cast_column("audio", Audio(sampling_rate=16_000))
    minds = minds.train_test_split(test_size=0.25, seed=0)
    first = minds["train"][0]["audio"]  # an AudioDecoder in datasets >= 4
    samples = first.get_all_samples()
    np.testing.assert_allclose(samples.data.numpy().mean(0), decode_audio(first.metadata.path), atol=1e-6)
    trainer, metrics, encoded_minds = run_tutorial_recipe(minds, tiny_matpac_folder, tmp_path)
    check_recipe_results(trainer, metrics, encoded_minds, minds, tmp_path)


# ----------------------------------------------------------------------------------------------------------------------
# transformers' examples/pytorch/audio-classification/run_audio_classification.py: the calls it makes, in order
# ----------------------------------------------------------------------------------------------------------------------


def run_example_script_calls(raw_datasets: DatasetDict, model_folder, output_dir, max_length_seconds: float = 1.0):
    """What transformers' example script does with its default flags plus `--trust_remote_code
    --remove_unused_columns False --do_train --do_eval` (our own code, following its calls): the feature extractor
    with `return_attention_mask`, random crops, labels as string ids, `AutoConfig` / `AutoModelForAudioClassification`
    with remote code, `freeze_feature_encoder()` (its default `--freeze_feature_encoder True`), transforms that keep
    only `input_values` and `labels`, the Trainer with the feature extractor as `processing_class` (its padding
    collator), then train, save, evaluate and the model card."""
    import random

    import evaluate
    from transformers import AutoConfig

    set_seed(0)
    feature_extractor = AutoFeatureExtractor.from_pretrained(
        model_folder, return_attention_mask=True, trust_remote_code=True
    )
    model_input_name = feature_extractor.model_input_names[0]

    def crop(wav):
        sample_length = int(round(feature_extractor.sampling_rate * max_length_seconds))
        if len(wav) <= sample_length:
            return wav
        offset = random.randint(0, len(wav) - sample_length - 1)
        return wav[offset : offset + sample_length]

    def transforms(batch, train: bool):
        wavs = [np.asarray(audio["array"]) for audio in batch["audio"]]
        wavs = [crop(wav) for wav in wavs] if train else wavs
        inputs = feature_extractor(wavs, sampling_rate=feature_extractor.sampling_rate)
        return {model_input_name: inputs.get(model_input_name), "labels": list(batch["label"])}

    labels = raw_datasets["train"].features["label"].names
    label2id = {label: str(i) for i, label in enumerate(labels)}
    id2label = {str(i): label for i, label in enumerate(labels)}
    metric = evaluate.load(str(matpac_hf.METRICS_DIR / "accuracy"))

    def compute_metrics(eval_pred):
        return metric.compute(predictions=np.argmax(eval_pred.predictions, axis=1), references=eval_pred.label_ids)

    config = AutoConfig.from_pretrained(
        model_folder,
        num_labels=len(labels),
        label2id=label2id,
        id2label=id2label,
        finetuning_task="audio-classification",
        trust_remote_code=True,
    )
    model = AutoModelForAudioClassification.from_pretrained(
        model_folder, config=config, trust_remote_code=True, ignore_mismatched_sizes=False
    )
    model.freeze_feature_encoder()
    raw_datasets["train"].set_transform(lambda batch: transforms(batch, True), output_all_columns=False)
    raw_datasets["eval"].set_transform(lambda batch: transforms(batch, False), output_all_columns=False)
    training_args = TrainingArguments(
        output_dir=str(output_dir),
        remove_unused_columns=False,
        do_train=True,
        do_eval=True,
        learning_rate=1e-3,
        num_train_epochs=3,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        report_to="none",
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=raw_datasets["train"],
        eval_dataset=raw_datasets["eval"],
        compute_metrics=compute_metrics,
        processing_class=feature_extractor,
    )
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    train_result = trainer.train()
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.create_model_card(
        finetuned_from=str(model_folder), tasks="audio-classification", dataset="tones", tags=["audio-classification"]
    )
    return model, before, metrics


def check_example_script_results(model, before, metrics, output_dir):
    changed = {name for name, parameter in model.named_parameters() if not torch.equal(parameter, before[name])}
    patch_embedding = {name for name in before if name.startswith("matpac.embeddings.patch_embeddings.")}
    assert patch_embedding == {
        "matpac.embeddings.patch_embeddings.projection.weight",
        "matpac.embeddings.patch_embeddings.projection.bias",
    }
    assert not changed & patch_embedding  # frozen by freeze_feature_encoder()
    assert "classifier.weight" in changed and any(name.startswith("matpac.encoder.") for name in changed)
    assert metrics["eval_accuracy"] >= 0.9, metrics
    reloaded = AutoModelForAudioClassification.from_pretrained(output_dir).eval()
    assert reloaded.config.id2label == {0: "low", 1: "high"}
    assert (output_dir / "README.md").is_file()


def example_script_datasets(audio_files) -> DatasetDict:
    split = audio_dataset(audio_files).train_test_split(test_size=0.25, seed=0)
    return DatasetDict(train=split["train"], eval=split["test"])


def test_transformers_example_script_calls_run_with_freeze_feature_encoder(tiny_matpac_folder, audio_files, tmp_path):
    """Decoding without torchcodec (the script's `cast_column(Audio(sampling_rate))` needs it): `decode_audio_column`
    gives the same `{"array", ...}` rows; everything after decoding is the script's."""
    decode = decode_audio_column("audio")
    raw_datasets = example_script_datasets(audio_files)
    raw_datasets = raw_datasets.map(decode, batched=True, features=decode.features(raw_datasets["train"].features))
    model, before, metrics = run_example_script_calls(raw_datasets, tiny_matpac_folder, tmp_path)
    check_example_script_results(model, before, metrics, tmp_path)


def test_transformers_example_script_calls_with_torchcodec_decoding(tiny_matpac_folder, audio_files, tmp_path):
    pytest.importorskip("torchcodec", reason="torchcodec (and FFmpeg's libraries) are not installed")
    raw_datasets = example_script_datasets(audio_files).cast_column("audio", Audio(sampling_rate=16_000))
    model, before, metrics = run_example_script_calls(raw_datasets, tiny_matpac_folder, tmp_path)
    check_example_script_results(model, before, metrics, tmp_path)
