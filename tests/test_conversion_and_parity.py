"""Checkpoint conversion and numerical parity with an independent re-implementation of the official inference code.

`tests/official_reference.py` rebuilds the official model with the official module names (so its `state_dict()` is a
release-layout checkpoint) and the official "precise" forward. Random weights, official layout -> our converter ->
`AutoModel` / `AutoFeatureExtractor` -> outputs compared with the reference.
"""

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from official_reference import (
    OfficialMatpac,
    OfficialTrainingModel,
    randomize_,
    randomize_training_,
    reference_log_mel,
)
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, AutoModelForPreTraining

from matpac_hf.convert_original_checkpoint import CheckpointError, convert_checkpoint, main, read_labels


SR = 16000
DURATIONS = [0.025, 0.17, 1.0, 6.08, 13.7]  # seconds: 1 frame, < 1 patch column, 1 chunk, a full chunk, 3 chunks
# Measured on this machine (float32, CPU): the log-mel is bit-exact for every clip below; frame and clip embeddings
# differ by at most 1.9e-6 (small model) and 3.0e-6 (ViT-B, 12 blocks): a bound of 1e-5 leaves a 3x margin.
EMBEDDING_TOLERANCE = 1e-5
TOLERANCE = 1e-4  # classifier logits and the training-checkpoint parts
SMALL = dict(embed_dim=64, depth=2, num_heads=4)


def make_audio(seconds: float, seed: int = 0, kind: str = "chirp") -> np.ndarray:
    """ "chirp": a rising chirp in noise; "loud_low_tone": a 0.99-amplitude 100 Hz sine over a faint harmonic and
    noise, whose quiet upper mel bands are where float32 rounding of the window and filters shows most."""
    rng = np.random.default_rng(seed)
    num_samples = int(round(seconds * SR))
    t = np.arange(num_samples) / SR
    if kind == "chirp":
        audio = 0.3 * np.sin(2 * np.pi * (300 + 2000 * t) * t) + 0.1 * rng.standard_normal(num_samples)
    elif kind == "loud_low_tone":
        audio = 0.99 * np.sin(2 * np.pi * 100 * t) + 1e-3 * np.sin(2 * np.pi * 330 * t)
        audio = audio + 1e-5 * rng.standard_normal(num_samples)
    else:
        raise ValueError(kind)
    return audio.astype(np.float32)


def save_official(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def converted(tmp_path_factory, reference: OfficialMatpac, name: str, **kwargs):
    folder = tmp_path_factory.mktemp(name)
    checkpoint = save_official(reference, folder / "official.pt")
    convert_checkpoint(checkpoint, folder / "hf", num_attention_heads=reference_heads(reference), **kwargs)
    return folder / "hf"


def reference_heads(reference: OfficialMatpac) -> int:
    return reference.student_encoder.blocks[0].attn.num_heads


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    reference = randomize_(OfficialMatpac(**SMALL), seed=1)
    folder = converted(tmp_path_factory, reference, "small")
    return reference, AutoModel.from_pretrained(folder).eval(), AutoFeatureExtractor.from_pretrained(folder)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    reference = randomize_(OfficialMatpac(), seed=2)  # ViT-B: 768 wide, 12 blocks, 12 heads
    folder = converted(tmp_path_factory, reference, "base")
    return reference, AutoModel.from_pretrained(folder).eval(), AutoFeatureExtractor.from_pretrained(folder)


def reference_embeddings(reference, audio):
    log_mel = torch.from_numpy(reference_log_mel(audio)).float()[None]
    with torch.no_grad():
        return log_mel, *reference.forward_precise(log_mel, keep_internals=True)


# ----------------------------------------------------------------------------------------------------------------------
# Parity
# ----------------------------------------------------------------------------------------------------------------------


def check_against_reference(reference, model, feature_extractor, audio) -> dict:
    """Front end and embeddings of one clip against the reference; returns the measured differences."""
    log_mel_ref, frames_ref, _, _, _ = reference_embeddings(reference, audio)
    inputs = feature_extractor(audio, sampling_rate=SR, return_tensors="pt")
    # the official front end gives (1, 80, frames), frequency first; input_values are (1, frames, 80)
    assert inputs["input_values"].shape == log_mel_ref.transpose(1, 2).shape
    with torch.no_grad():
        outputs = model(**inputs)
    num_columns = -(-log_mel_ref.shape[-1] // 16)
    assert outputs.last_hidden_state.shape == (1, num_columns, 5 * reference.cls_token.shape[-1])
    return {
        "log-mel": (inputs["input_values"] - log_mel_ref.transpose(1, 2)).abs().max().item(),
        "frames": (outputs.last_hidden_state - frames_ref).abs().max().item(),
        "clip": (outputs.pooler_output - frames_ref.mean(dim=1)).abs().max().item(),
    }


@pytest.mark.parametrize("kind", ["chirp", "loud_low_tone"])
@pytest.mark.parametrize("seconds", DURATIONS)
def test_small_model_matches_reference(small, seconds, kind):
    """Every clip length (one frame, under one patch column, one chunk, exactly one chunk, three chunks) and both
    signals: the front end is bit-exact, also next to a loud 100 Hz tone, and embeddings agree."""
    reference, model, feature_extractor = small
    diff = check_against_reference(reference, model, feature_extractor, make_audio(seconds, int(seconds * 100), kind))
    print(f"small {kind} {seconds:>6} s: " + "  ".join(f"{name} {value:.2e}" for name, value in diff.items()))
    assert diff["log-mel"] == 0.0
    assert diff["frames"] < EMBEDDING_TOLERANCE and diff["clip"] < EMBEDDING_TOLERANCE


def test_vit_base_matches_reference(base):
    """The released size (768 wide, 12 blocks, 12 heads; sizes inferred from the shapes) on a 3-chunk chirp and a
    1 s loud low tone."""
    reference, model, feature_extractor = base
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.intermediate_size, config.max_frames) == (3072, 608)
    for seconds, kind in ((13.7, "chirp"), (1.0, "loud_low_tone")):
        diff = check_against_reference(reference, model, feature_extractor, make_audio(seconds, 7, kind))
        print(f"ViT-B {kind} {seconds:>6} s: " + "  ".join(f"{name} {value:.2e}" for name, value in diff.items()))
        assert diff["log-mel"] == 0.0
        assert diff["frames"] < EMBEDDING_TOLERANCE and diff["clip"] < EMBEDDING_TOLERANCE


def test_hidden_states_mapping(small):
    """hidden_states[0] = embedded patches, [i] = block i, [-1] = last block before the final norm;
    last_hidden_state = after the final norm (the official last layer result)."""
    reference, model, feature_extractor = small
    audio = make_audio(7.5, seed=3)  # two chunks
    _, frames_ref, layers_ref, embedded_ref, last_raw_ref = reference_embeddings(reference, audio)
    inputs = feature_extractor(audio, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=True)
    hidden_states = outputs.hidden_states
    depth = len(reference.student_encoder.blocks)
    assert len(hidden_states) == depth + 1
    assert (hidden_states[0] - embedded_ref).abs().max() < TOLERANCE
    for i in range(1, depth):
        assert (hidden_states[i] - layers_ref[:, i - 1]).abs().max() < TOLERANCE
    assert (hidden_states[depth] - last_raw_ref).abs().max() < TOLERANCE
    assert (outputs.last_hidden_state - layers_ref[:, -1]).abs().max() < TOLERANCE
    # the last block before and after the norm really differ (the test can tell them apart)
    assert (hidden_states[depth] - outputs.last_hidden_state).abs().max() > 0.1


def test_long_audio_equals_each_chunk_alone(small):
    _, model, feature_extractor = small
    audio = make_audio(13.7, seed=4)  # 1368 frames: chunks of 608, 608, 152
    inputs = feature_extractor(audio, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        whole = model(**inputs).last_hidden_state
        pieces = [model(inputs["input_values"][:, start : start + 608]).last_hidden_state for start in (0, 608, 1216)]
    assert [p.shape[1] for p in pieces] == [38, 38, 10]
    assert (whole - torch.cat(pieces, dim=1)).abs().max() < 1e-5


def test_mixed_length_batch_equals_one_by_one(small):
    _, model, feature_extractor = small
    clips = [make_audio(seconds, seed=i) for i, seconds in enumerate([13.7, 0.025, 6.08, 1.0, 0.17])]
    batch = feature_extractor(clips, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**batch)
        for i, clip in enumerate(clips):
            alone = model(**feature_extractor(clip, sampling_rate=SR, return_tensors="pt"))
            num_frames = alone.last_hidden_state.shape[1]
            assert outputs.frame_mask[i].sum() == num_frames
            assert (outputs.last_hidden_state[i, :num_frames] - alone.last_hidden_state[0]).abs().max() < 1e-5
            assert (outputs.pooler_output[i] - alone.pooler_output[0]).abs().max() < 1e-5


def test_short_audio_is_a_clear_error(small):
    _, model, feature_extractor = small
    with pytest.raises(ValueError, match="399 samples; the minimum is 400 samples"):
        feature_extractor(make_audio(399 / SR), sampling_rate=SR, return_tensors="pt")
    shortest = feature_extractor(make_audio(400 / SR), sampling_rate=SR, return_tensors="pt")  # one frame
    assert model(**shortest).pooler_output.shape == (1, 5 * 64)


# ----------------------------------------------------------------------------------------------------------------------
# Conversion: command line, classifiers, training checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def test_command_line_round_trip(tmp_path, caplog):
    """`main(argv)` in-process (what `python -m matpac_hf.convert_original_checkpoint` runs): a release-named file
    -> a loadable folder with a card that does not claim MIT for the authors' weights and names no local path."""
    reference = randomize_(OfficialMatpac(embed_dim=64, depth=2, num_heads=4), seed=5)
    checkpoint = save_official(reference, tmp_path / "matpac_plus_6s_2048_enconly.pt")
    argv = ["--checkpoint_path", str(checkpoint), "--output_dir", str(tmp_path / "out"), "--num_attention_heads", "4"]
    with caplog.at_level(logging.INFO, logger="matpac_hf.convert"):
        assert main(argv + ["--hub_model_id", "someone/matpac-plus"]) == 0
    assert "matches the fixed sin-cos table" in caplog.text
    files = {path.name for path in (tmp_path / "out").iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "modeling_matpac.py", "README.md"} <= files
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (64, 2, 4)
    assert (config["intermediate_size"], config["max_frames"], config["patch_size"]) == (256, 608, 16)

    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    log_mel = torch.randn(2, 80, 700)
    with torch.no_grad():
        expected, _ = reference.forward_precise(log_mel)  # the official model takes (batch, 80, frames)
        assert (model(log_mel.transpose(1, 2)).last_hidden_state - expected).abs().max() < EMBEDDING_TOLERANCE

    text = (tmp_path / "out" / "README.md").read_text()
    card = ModelCard(text)
    # the licence the official repository states, and what could not be verified
    assert card.data.license == "apache-2.0" and "mit" not in str(card.data.license).lower()
    assert "not covered by matpac-hf's MIT licence" in card.text and "nttcslab/m2d" in card.text
    assert "states the Apache License 2.0" in card.text and "could not read that LICENSE file" in card.text
    assert "MATPAC++, self-supervised on AudioSet (general audio)" in card.text  # the release file is recognised
    assert "`matpac_plus_6s_2048_enconly.pt` from the authors' GitHub releases" in card.text
    assert "records no training progress" in card.text
    assert 'AutoModel.from_pretrained("someone/matpac-plus")' in card.text and "matpac++" in card.data.tags
    assert "320-d frame embedding" in card.text  # sizes from the converted config, not the ViT-B defaults
    assert str(tmp_path) not in text and "/tmp" not in text

    # --license replaces the default (the user knows the terms); the notice on where the weights come from stays
    assert main(argv[:3] + [str(tmp_path / "licensed")] + argv[4:] + ["--license", "cc-by-4.0"]) == 0
    licensed = ModelCard((tmp_path / "licensed" / "README.md").read_text())
    assert licensed.data.license == "cc-by-4.0" and licensed.data.license_link is None
    assert "`cc-by-4.0`, as given when converting" in licensed.text and "aurianworld/matpac" in licensed.text

    # a refused file: exit status 1 and the reason logged, nothing written
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pt")
    caplog.clear()
    assert main(["--checkpoint_path", str(tmp_path / "other.pt"), "--output_dir", str(tmp_path / "bad")]) == 1
    assert "holds no MATPAC encoder weights" in caplog.text
    assert not (tmp_path / "bad").exists()


def test_audioset_finetuned_checkpoint(tmp_path):
    """Encoder (992-frame table) + head_norm running stats + head -> MatpacForAudioClassification, pooling 'mean'."""
    reference = randomize_(OfficialMatpac(**SMALL, n_t=992, num_classes=4), seed=6)
    checkpoint = save_official(reference, tmp_path / "matpac_as_head.pt")
    labels = tmp_path / "labels.csv"
    labels.write_text("index,mid,display_name\n0,/m/b,Speech\n1,/m/a,Music\n2,/m/d,Dog\n3,/m/c,Rain\n")
    convert_checkpoint(checkpoint, tmp_path / "hf", num_attention_heads=4, label_file=labels)
    model = AutoModelForAudioClassification.from_pretrained(tmp_path / "hf").eval()
    assert model.config.max_frames == 992 and model.config.classifier_pooling == "mean"
    # the official code numbers the AudioSet head's classes by sorted 'mid'; AudioSet is multi-label (sigmoid)
    assert model.config.id2label == {0: "Music", 1: "Speech", 2: "Rain", 3: "Dog"}
    assert model.config.label2id["Dog"] == 3
    assert model.config.problem_type == "multi_label_classification"
    convert_checkpoint(
        checkpoint, tmp_path / "by_index", num_attention_heads=4, label_file=labels, label_sort_column="index"
    )
    by_index = AutoModelForAudioClassification.from_pretrained(tmp_path / "by_index")
    assert by_index.config.id2label == {0: "Speech", 1: "Music", 2: "Dog", 3: "Rain"}

    from transformers import pipeline

    import matpac_hf  # noqa: F401  (registers the pipeline's model classes)

    classifier = pipeline("audio-classification", model=str(tmp_path / "hf"))
    scores = classifier(make_audio(2.0), top_k=4)
    assert sum(item["score"] for item in scores) != pytest.approx(1.0, abs=1e-3)  # independent sigmoids
    with torch.no_grad():
        logits = model(**classifier.feature_extractor(make_audio(2.0), sampling_rate=SR, return_tensors="pt")).logits
    expected = {model.config.id2label[i]: p for i, p in enumerate(torch.sigmoid(logits)[0].tolist())}
    for item in scores:
        assert item["score"] == pytest.approx(expected[item["label"]], abs=1e-5)

    log_mel = torch.from_numpy(reference_log_mel(make_audio(13.7))).float()[None]  # 1368 frames: 2 chunks of 992
    with torch.no_grad():
        expected = reference.audioset_logits(log_mel)
        logits = model(log_mel.transpose(1, 2)).logits
    assert (logits - expected).abs().max() < TOLERANCE
    assert (model.head_norm.running_var - reference.head_norm.running_var).abs().max() == 0


def test_probe_checkpoint(tmp_path):
    """Encoder + --probe_path (probe.weight/bias on the 3840-d embedding) -> pooling 'concat'."""
    reference = randomize_(OfficialMatpac(**SMALL, probe_classes=3), seed=7)
    state = reference.state_dict()
    encoder = {key: value for key, value in state.items() if not key.startswith("probe.")}
    torch.save(encoder, tmp_path / "encoder.pt")
    torch.save({"probe.weight": state["probe.weight"], "probe.bias": state["probe.bias"]}, tmp_path / "esc50.pth")
    (tmp_path / "labels.json").write_text(json.dumps({"dog": 0, "rain": 2, "crow": 1}))
    convert_checkpoint(
        tmp_path / "encoder.pt",
        tmp_path / "hf",
        probe_path=tmp_path / "esc50.pth",
        label_file=tmp_path / "labels.json",
        num_attention_heads=4,
        base_model="someone/matpac-plus",
    )
    card = ModelCard((tmp_path / "hf" / "README.md").read_text())
    assert card.data.pipeline_tag == "audio-classification" and card.data.base_model == "someone/matpac-plus"
    assert card.data.license == "apache-2.0" and "not covered by matpac-hf's MIT licence" in card.text
    assert "over 3 classes" in card.text and "dog, crow, rain" in card.text
    assert "with the downstream probe `esc50.pth`" in card.text and str(tmp_path) not in card.content
    model = AutoModelForAudioClassification.from_pretrained(tmp_path / "hf").eval()
    assert model.config.classifier_pooling == "concat"
    assert model.config.id2label == {0: "dog", 1: "crow", 2: "rain"}
    assert model.config.problem_type == "single_label_classification"  # ESC-50: one class per clip
    log_mel = torch.from_numpy(reference_log_mel(make_audio(3.3))).float()[None]
    with torch.no_grad():
        assert (model(log_mel.transpose(1, 2)).logits - reference.probe_logits(log_mel)).abs().max() < TOLERANCE

    with pytest.raises(CheckpointError, match="lists 2 labels but the classifier has 3 outputs"):
        (tmp_path / "two.txt").write_text("a\nb\n")
        convert_checkpoint(
            tmp_path / "encoder.pt",
            tmp_path / "x",
            probe_path=tmp_path / "esc50.pth",
            label_file=tmp_path / "two.txt",
            num_attention_heads=4,
        )

    # a multi-label task's probe (named as released) gets sigmoid scores; --problem_type overrides the guess
    shutil.copy(tmp_path / "esc50.pth", tmp_path / "fsd50k.pth")
    for problem_type, expected in (
        (None, "multi_label_classification"),
        ("single_label_classification", "single_label_classification"),
    ):
        folder = tmp_path / f"fsd50k-{problem_type}"
        convert_checkpoint(
            tmp_path / "encoder.pt",
            folder,
            probe_path=tmp_path / "fsd50k.pth",
            num_attention_heads=4,
            problem_type=problem_type,
        )
        assert AutoModelForAudioClassification.from_pretrained(folder).config.problem_type == expected
    with pytest.raises(CheckpointError, match="only apply to a classifier"):
        convert_checkpoint(
            tmp_path / "encoder.pt", tmp_path / "y", problem_type="multi_label_classification", num_attention_heads=4
        )


@pytest.mark.parametrize("mcl_heads", [0, 3])
def test_fairseq_training_checkpoint(tmp_path, caplog, mcl_heads):
    reference = randomize_training_(OfficialTrainingModel(mcl_heads=mcl_heads), seed=8)
    torch.save(reference.fairseq_checkpoint(), tmp_path / "checkpoint_last.pt")

    # default: the student encoder, with the rest reported as not converted; the head counts (4 and 2, which no
    # width rule gives for widths 64 and 32) come from the cfg, and num_updates goes to training_progress.json
    with caplog.at_level(logging.WARNING, logger="matpac_hf.convert"):
        convert_checkpoint(tmp_path / "checkpoint_last.pt", tmp_path / "encoder")
    assert "use --model_type pretraining to keep them" in caplog.text and "_ema (nested dict" in caplog.text
    assert (
        "The checkpoint records 100 optimiser steps, fairseq epoch 3"
        in (tmp_path / "encoder" / "README.md").read_text()
    )
    progress = json.loads((tmp_path / "encoder" / "training_progress.json").read_text())
    assert (progress["num_updates"], progress["epoch"]) == (100, 3)
    encoder = AutoModel.from_pretrained(tmp_path / "encoder").eval()
    assert encoder.config.num_attention_heads == 4
    log_mel = torch.randn(1, 80, 650)
    with torch.no_grad():
        official = reference.forward_precise(log_mel)[0]  # the official model takes (1, 80, frames)
        assert (encoder(log_mel.transpose(1, 2)).last_hidden_state - official).abs().max() < TOLERANCE

    # everything: MatpacForPreTraining
    convert_checkpoint(
        tmp_path / "checkpoint_last.pt",
        tmp_path / "pretraining",
        model_type="pretraining",
    )
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "pretraining").eval()
    assert model.config.use_mcl == bool(mcl_heads)
    if mcl_heads:  # the official decoder's unused single projection is reported, not converted
        assert "Not converted: decoder.decoder_pred.bias, decoder.decoder_pred.weight" in caplog.text
    # schedules read from the fairseq cfg
    config = model.config
    assert (config.total_steps, config.teacher_temperature_warmup_steps) == (100, 20)
    assert (config.ema_decay_start, config.ema_decay_end, config.head_ema_decay_start) == (0.9995, 0.9999, 0.99)
    assert (config.mcl_temperature_start, config.mcl_temperature_min, config.mcl_temperature_decay) == (0.2, 1e-3, 0.9)
    assert config.head_ema_decay_end == 1.0  # not in this cfg: the official default
    assert (model.config.decoder_hidden_size, model.config.head_num_prototypes) == (32, 40)
    assert (config.num_attention_heads, config.decoder_num_attention_heads) == (4, 2)  # from the cfg
    teacher_encoder, teacher_head = reference.teacher_encoder[0], reference.teacher_head[0]
    with torch.no_grad():
        tokens = torch.randn(2, 11, 64)
        assert (model.teacher_encoder(tokens).last_hidden_state - teacher_encoder(tokens)).abs().max() < TOLERANCE
        assert (model.student_head(tokens) - reference.cls_student_head(tokens)).abs().max() < TOLERANCE
        assert (model.teacher_head(tokens) - teacher_head(tokens)).abs().max() < TOLERANCE
        assert torch.equal(model.center, reference.cls_head_loss.center)
        permutation = torch.stack([torch.randperm(190) for _ in range(2)])
        visible = torch.randn(2, 1 + 57, 64)
        predictions = model.predictor(visible, torch.argsort(permutation, dim=1), permutation[:, 57:])
        expected = reference.forward_decoder(visible, torch.argsort(permutation, dim=1))
        assert predictions.shape == expected.shape
        assert (predictions - expected).abs().max() < TOLERANCE
    assert not any(p.requires_grad for p in model.teacher_encoder.parameters())


def test_head_counts_without_cfg_need_the_options(tmp_path):
    # A training checkpoint whose cfg states no head counts, of a width that is not ViT-B's: the converter does not
    # guess (width // 64 would give 1 head here), it names the option; a CLI value contradicting the cfg is refused.
    reference = randomize_training_(OfficialTrainingModel(), seed=8)
    checkpoint = reference.fairseq_checkpoint()
    del checkpoint["cfg"]["model"]["encoder"], checkpoint["cfg"]["model"]["decoder"]
    torch.save(checkpoint, tmp_path / "no_heads.pt")
    with pytest.raises(CheckpointError, match="--num_attention_heads"):
        convert_checkpoint(tmp_path / "no_heads.pt", tmp_path / "out")
    with pytest.raises(CheckpointError, match="--decoder_num_attention_heads"):
        convert_checkpoint(tmp_path / "no_heads.pt", tmp_path / "out", model_type="pretraining", num_attention_heads=4)
    torch.save(reference.fairseq_checkpoint(), tmp_path / "with_heads.pt")
    with pytest.raises(CheckpointError, match="contradicts the checkpoint's cfg"):
        convert_checkpoint(tmp_path / "with_heads.pt", tmp_path / "out", num_attention_heads=8)


# ----------------------------------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------------------------------


def _small_state():
    return randomize_(OfficialMatpac(**SMALL), seed=9).state_dict()


def _with(state, **changes):
    state = dict(state)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            state.pop(key)
        else:
            state[key] = value
    return state


@pytest.mark.parametrize(
    "content, message",
    [
        (torch.zeros(3, 3), "holds a Tensor, not a state dict"),
        ([1, 2, 3], "holds a list, not a state dict"),
        ({"encoder.layer.0.weight": torch.zeros(2)}, "holds no MATPAC encoder weights"),
        ({"state_dict": {"patch_embed.proj.weight": torch.zeros(2)}}, "entries 'state_dict' (dict) are not tensors"),
        ({"model": {"cls_token": torch.zeros(1)}, "optimizer": {}}, "beside unknown entries ['optimizer']"),
        ("wrong_qkv", "attn.qkv.weight (100, 64) -> encoder.layers.0.attention.qkv.weight expects (192, 64)"),
        ("wrong_pos_embed", "'pos_embed' has shape (1, 192, 64); expected (1, 1 + 5 x time_patches, 64)"),
        ("no_final_norm", "lacks weights the model needs (they would stay random): encoder.layernorm.bias"),
    ],
)
def test_refuses_files_it_does_not_understand(tmp_path, content, message):
    if content == "wrong_qkv":
        content = _with(_small_state(), student_encoder__blocks__0__attn__qkv__weight=torch.zeros(100, 64))
    elif content == "wrong_pos_embed":
        content = _with(_small_state(), pos_embed=torch.zeros(1, 192, 64))
    elif content == "no_final_norm":
        content = _with(_small_state(), student_encoder__norm__weight=None, student_encoder__norm__bias=None)
    torch.save(content, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as error:
        convert_checkpoint(tmp_path / "bad.pt", tmp_path / "out", num_attention_heads=4)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists()


def test_pickled_objects_are_refused_with_the_way_out(tmp_path):
    torch.save({"cls_token": torch.zeros(1, 1, 64), "note": Path("x")}, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pass --trust_pickle"):
        convert_checkpoint(tmp_path / "pickled.pt", tmp_path / "out")


def test_position_table_mismatch_warns_loudly(tmp_path, caplog):
    state = _small_state()
    state["pos_embed"] = state["pos_embed"] + 0.25
    torch.save(state, tmp_path / "shifted.pt")
    with caplog.at_level(logging.WARNING, logger="matpac_hf.convert"):
        convert_checkpoint(tmp_path / "shifted.pt", tmp_path / "out", num_attention_heads=4)
    assert "differs from the fixed 2-D sin-cos table by up to 0.25" in caplog.text


def test_label_files(tmp_path):
    (tmp_path / "a.txt").write_text("Speech\nMusic\n\n")
    (tmp_path / "b.json").write_text(json.dumps({"1": "Music", "0": "Speech"}))
    (tmp_path / "c.csv").write_text("index,mid,display_name\n1,/m/a,Music\n0,/m/b,Speech\n")
    assert read_labels(tmp_path / "a.txt") == ["Speech", "Music"]
    assert read_labels(tmp_path / "b.json") == ["Speech", "Music"]
    assert read_labels(tmp_path / "c.csv") == ["Speech", "Music"]
    assert read_labels(tmp_path / "c.csv", sort_column="mid") == ["Music", "Speech"]
    (tmp_path / "d.json").write_text(json.dumps({"0": "a", "2": "b"}))
    with pytest.raises(ValueError, match="indices must be exactly 0..1"):
        read_labels(tmp_path / "d.json")
    # no header: `index,name` rows (the official fsd50k_mapping.csv); indices compared as numbers
    rows = [f"{i},class{i}" for i in (10, 2, 0, 1, 3, 4, 5, 6, 7, 8, 9)]
    (tmp_path / "e.csv").write_text("\n".join(rows) + "\n")
    assert read_labels(tmp_path / "e.csv") == [f"class{i}" for i in range(11)]
    (tmp_path / "f.csv").write_text("index,display_name\n" + "\n".join(rows) + "\n")
    assert read_labels(tmp_path / "f.csv") == [f"class{i}" for i in range(11)]
    (tmp_path / "g.txt").write_text("a\nb\na\n")
    with pytest.raises(ValueError, match="must be unique.*repeated: \\['a'\\]"):
        read_labels(tmp_path / "g.txt")
