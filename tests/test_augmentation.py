# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Pretraining augmentation (src/matpac_hf/augmentation.py): a function of (seed, epoch, clip), padding kept, each
family acting, off by default with today's crops bitwise, exact resume with it on, and the teacher's own view."""

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from matpac_hf import MatpacForPreTraining
from matpac_hf.augmentation import AUGMENTATION_FAMILIES, AugmentationConfig, PretrainingAugmentation, parse_families
from matpac_hf.pretraining_data import PretrainingDataLoop, build_crop_stream, load_audio_stream


sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_audio_io import tone  # noqa: E402
from test_pretraining_data import _batches, _write_folder  # noqa: E402


pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")

SAMPLES = 16000


def _crops(batch=4, samples=SAMPLES):
    return np.stack([tone(samples / 16000, 16000, 200 + 150 * i, seed=i) for i in range(batch)])


def _augment(families, crops=None, epoch=0, keys=None, seed=0, num_valid=None, **config):
    crops = _crops() if crops is None else crops
    keys = keys or [f"clip{i}" for i in range(len(crops))]
    num_valid = num_valid or [crops.shape[1]] * len(crops)
    augmentation = PretrainingAugmentation(AugmentationConfig(families=families, **config), seed=seed)
    return augmentation.augment_batch(crops, num_valid, keys, epoch)


def test_augmentation_is_a_function_of_seed_epoch_and_clip():
    crops = _crops()
    python_state, numpy_state = random.getstate(), np.random.get_state()[1].copy()
    first = _augment(AUGMENTATION_FAMILIES, crops, epoch=3, probability=1.0)
    again = _augment(AUGMENTATION_FAMILIES, crops, epoch=3, probability=1.0)
    assert first.dtype == np.float32 and first.shape == crops.shape
    assert np.array_equal(first, again)
    # the global random states audiomentations draws from are restored
    assert random.getstate() == python_state and np.array_equal(np.random.get_state()[1], numpy_state)
    other_epoch = _augment(AUGMENTATION_FAMILIES, crops, epoch=4, probability=1.0)
    other_seed = _augment(AUGMENTATION_FAMILIES, crops, epoch=3, seed=1, probability=1.0)
    for row in range(len(crops)):
        assert not np.allclose(first[row], other_epoch[row])
        assert not np.allclose(first[row], other_seed[row])
    # without mix (the one family that reads another crop of the batch) a clip's crop does not depend on its batch
    no_mix = tuple(name for name in AUGMENTATION_FAMILIES if name != "mix")
    together = _augment(no_mix, crops, epoch=2, probability=1.0)
    alone = _augment(no_mix, crops[2:3], epoch=2, keys=["clip2"], probability=1.0)
    assert np.array_equal(together[2], alone[0])


@pytest.mark.parametrize("family", AUGMENTATION_FAMILIES)
def test_each_family_changes_the_crop_and_keeps_the_padding_zero(family):
    crops = _crops()
    num_valid = [SAMPLES, SAMPLES - 3000, SAMPLES, 9000]
    for row, valid in enumerate(num_valid):
        crops[row, valid:] = 0.0
    out = _augment((family,), crops, num_valid=num_valid, probability=1.0)
    for row, valid in enumerate(num_valid):
        assert np.all(out[row, valid:] == 0.0)
        assert np.all(np.isfinite(out[row]))
        change = np.abs(out[row, :valid] - crops[row, :valid]).mean() / np.abs(crops[row, :valid]).mean()
        assert change > 0.01, (family, row, change)


def test_gain_stays_within_its_range_and_mix_keeps_the_crop_dominant():
    crops = _crops(8)
    rms = lambda x: np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1))  # noqa: E731
    gain_db = 20 * np.log10(rms(_augment(("gain",), crops, probability=1.0, gain_db=6.0)) / rms(crops))
    assert np.all(np.abs(gain_db) <= 6.0 + 1e-4) and np.ptp(gain_db) > 1.0
    mixed = _augment(("mix",), crops, probability=1.0, mix_snr_db=(10.0, 10.0))
    background = mixed - crops  # the next crop of the batch, scaled to 10 dB below the crop
    assert np.allclose(10 * np.log10(rms(crops) ** 2 / rms(background) ** 2), 10.0, atol=1e-3)
    assert np.allclose(background[0] / np.abs(background[0]).max(), crops[1] / np.abs(crops[1]).max(), atol=1e-4)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="Unknown augmentation families \\['reverb'\\]"):
        AugmentationConfig(families=("pitch", "reverb"))
    with pytest.raises(ValueError, match="probability"):
        AugmentationConfig(families=("gain",), probability=0.0)
    with pytest.raises(ValueError, match="teacher_view"):
        AugmentationConfig(families=("pitch", "stretch"), teacher_view=True)
    assert parse_families("all") == AUGMENTATION_FAMILIES and parse_families("none") == ()
    assert AugmentationConfig(families=parse_families("noise, pitch")).families == ("pitch", "noise")


def _loop(dataset, column, augmentation=None, num_workers=0):
    stream = build_crop_stream(dataset, column, seed=5, crop_frames=96, augmentation=augmentation)
    return PretrainingDataLoop(stream, batch_size=2, num_workers=num_workers)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = _write_folder(
        tmp_path_factory.mktemp("augment") / "corpus",
        [(f"c{i:02d}.flac", tone(1.5 + 0.2 * i, 16000, 150 + 60 * i, seed=i), 16000) for i in range(6)],
    )
    return load_audio_stream(dataset_dir=str(folder))


def test_off_by_default_gives_todays_crops_bitwise(corpus):
    dataset, column = corpus
    today = _batches(PretrainingDataLoop(build_crop_stream(dataset, column, seed=5, crop_frames=96), 2), 4)
    off = _batches(_loop(dataset, column), 4)
    no_family = _batches(_loop(dataset, column, PretrainingAugmentation(AugmentationConfig(), seed=5)), 4)
    augmented = _batches(_loop(dataset, column, PretrainingAugmentation("all", seed=5)), 4)
    for expected, got, empty, changed in zip(today, off, no_family, augmented):
        assert set(got) == set(expected) == {"input_values", "num_valid_samples", "example_ids"}
        assert torch.equal(expected["input_values"], got["input_values"])
        assert torch.equal(expected["input_values"], empty["input_values"])
        assert changed["example_ids"] == expected["example_ids"]
        assert not torch.equal(expected["input_values"], changed["input_values"])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_with_augmentation_is_exact(corpus, num_workers):
    """3 batches per epoch: the resumed stream crosses an epoch boundary, and epochs augment differently."""
    dataset, column = corpus

    def make_loop():
        return _loop(dataset, column, PretrainingAugmentation("all", seed=5), num_workers=num_workers)

    reference = _batches(make_loop(), 7)
    interrupted = make_loop()
    _batches(interrupted, 2)
    state = json.loads(json.dumps(interrupted.state_dict()))
    resumed = make_loop()
    resumed.load_state_dict(state)
    for expected, got in zip(reference[2:], _batches(resumed, 5)):
        assert expected["example_ids"] == got["example_ids"]
        assert torch.equal(expected["input_values"], got["input_values"])
    assert reference[0]["example_ids"] == reference[3]["example_ids"]
    assert not torch.equal(reference[0]["input_values"], reference[3]["input_values"])


def test_teacher_view_differs_in_colour_only_and_feeds_the_teacher():
    crops = _crops()
    families = ("pitch", "gain", "filter")
    student, teacher = _augment(families, crops, probability=1.0, teacher_view=True)
    assert np.array_equal(student, _augment(families, crops, probability=1.0))  # the student's view is unchanged
    assert not np.allclose(student, teacher)
    # pitch is drawn once for both views: with it alone the two views are the same
    alone = PretrainingAugmentation(AugmentationConfig(families=("pitch",), probability=1.0), seed=0)
    alone_views = PretrainingAugmentation(
        AugmentationConfig(families=("pitch", "gain"), probability=1.0, gain_db=1e-9, teacher_view=True), seed=0
    ).augment_batch(crops, [SAMPLES] * 4, ["a", "b", "c", "d"], 0)
    expected = alone.augment_batch(crops, [SAMPLES] * 4, ["a", "b", "c", "d"], 0)
    assert np.allclose(alone_views[0], expected, atol=1e-6) and np.allclose(alone_views[1], expected, atol=1e-6)

    torch.manual_seed(0)
    model = MatpacForPreTraining(tiny_config()).eval()  # eval: the center stays put between the calls compared
    values = torch.randn(2, 64, 80)
    other = values + 0.5 * torch.randn(2, 64, 80)
    mask = torch.tensor([[1] * 64, [1] * 40 + [0] * 24])

    def loss(**kwargs):
        return model(values, attention_mask=mask, generator=torch.Generator().manual_seed(1), **kwargs).loss

    with torch.no_grad():
        same = loss(teacher_input_values=values.clone())
        assert torch.equal(loss(), same)  # the teacher's own view, equal to the student's: MATPAC's numbers
        assert not torch.equal(loss(teacher_input_values=other), same)
    with pytest.raises(ValueError, match="another view of input_values"):
        loss(teacher_input_values=values[:, :48])


def test_run_pretraining_with_augmentation_resumes_exactly(tmp_path, monkeypatch):
    """examples/run_pretraining.py with --augment all and the teacher's own view, in one DataLoader worker: killed
    after step 5, the run resumed from checkpoint-3 reproduces the uninterrupted run's losses."""
    from test_run_pretraining import RESUME_ARGS, SimulatedCrash, assert_same_losses, metrics, run, stop_at

    corpus = _write_folder(
        tmp_path / "corpus",
        [(f"c{i:02d}.flac", tone(6.3 + 0.1 * i, 16000, 150 + 60 * i, seed=i), 16000) for i in range(8)],
    )
    args = ["--dataset_dir", corpus, *RESUME_ARGS, "--num_workers", 1, "--augment", "all", "--augment_teacher_view"]
    assert run(*args, "--output_dir", tmp_path / "reference") == 0
    reference = metrics(tmp_path / "reference")
    assert run(*args[:-3], "--output_dir", tmp_path / "plain") == 0  # without augmentation the losses differ
    assert metrics(tmp_path / "plain")[1]["loss"] != pytest.approx(reference[1]["loss"], rel=1e-4)

    def crash():
        raise SimulatedCrash

    stop_at(monkeypatch, 5, crash)  # after step 5: checkpoint-3 is the latest
    with pytest.raises(SimulatedCrash):
        run(*args, "--output_dir", tmp_path / "crashed")
    monkeypatch.undo()
    assert run(*args, "--output_dir", tmp_path / "crashed", "--resume_from_checkpoint", "latest") == 0
    assert_same_losses(metrics(tmp_path / "crashed"), reference, range(1, 9))


def test_collate_augments_int16_crops_of_a_prepared_corpus_as_float():
    crops = _crops()
    pcm = np.round(crops * 2**15).clip(-(2**15), 2**15 - 1).astype(np.int16)
    examples = [
        {"input_values": pcm[row], "num_valid_samples": SAMPLES, "example_id": f"clip{row}", "epoch": 2}
        for row in range(len(pcm))
    ]
    augmentation = PretrainingAugmentation("gain,filter", seed=0)
    batch = augmentation.collate(examples)
    expected = augmentation.augment_batch(pcm.astype(np.float32) / 2**15, [SAMPLES] * 4, batch["example_ids"], 2)
    assert batch["input_values"].dtype == torch.float32
    assert np.array_equal(batch["input_values"].numpy(), expected)
