# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Waveform augmentation of pretraining crops (off by default; the official MATPAC run uses none).

An audiomentations chain applied to each waveform crop before the log-mel, so that the student and teacher see the
same sound through other voices, instruments, rooms and microphones and learn invariance to them. The families:

    pitch    pitch shift of up to +-`pitch_semitones` (signalsmith stretch)
    stretch  time stretch by a rate in [1 / `stretch_rate`, `stretch_rate`], length unchanged
    gain     gain of up to +-`gain_db`
    filter   one of a band-pass, low-pass, high-pass filter or a 7-band parametric EQ (+-12 dB per band)
    noise    coloured noise (white to brown) at an SNR in `noise_snr_db`
    mix      another crop of the batch mixed in as background, at an SNR in `mix_snr_db` (the crop stays dominant)

Each family is applied with probability `probability`, in the order pitch, stretch, mix, filter, gain, noise.
Everything a crop gets is a pure function of `(seed, epoch, clip key)`, like its position (`audio_io.crop_offset`):
resumed runs, other worker counts and other shuffle orders draw the same augmentation for the same clip in the same
epoch. The one exception is the background of `mix`, which is the next crop of the same batch (its SNR is still drawn
per clip), so it follows the batch composition; an exact resume reproduces the batches, hence the mixes.

audiomentations draws its parameters from Python's `random` and numpy's global generator: each crop is augmented
with both seeded from its `(seed, epoch, key)`, and their previous states are restored afterwards.

Two views (`teacher_view=True`, a departure from MATPAC, which gives the student and the teacher the same crop): the
teacher's crop gets its own draw of the families that leave the time-frequency layout in place (mix, filter, gain,
noise), so that the student predicts the teacher's features of a differently coloured copy of the same patches; pitch
and stretch, which move content between patches, are drawn once and shared by both views.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .audio_io import clip_hash
from .configuration_matpac import SAMPLING_RATE


AUGMENTATION_FAMILIES = ("pitch", "stretch", "mix", "filter", "gain", "noise")
# Families that move content in time or frequency: shared by the student's and the teacher's views.
GEOMETRIC_FAMILIES = ("pitch", "stretch")


@dataclass(frozen=True)
class AugmentationConfig:
    """Which families to apply and how strongly (see the module docstring)."""

    families: tuple[str, ...] = ()
    probability: float = 0.5
    pitch_semitones: float = 4.0
    stretch_rate: float = 1.25
    gain_db: float = 12.0
    noise_snr_db: tuple[float, float] = (5.0, 30.0)
    mix_snr_db: tuple[float, float] = (0.0, 15.0)
    teacher_view: bool = False

    def __post_init__(self):
        families = tuple(self.families)
        unknown = sorted(set(families) - set(AUGMENTATION_FAMILIES))
        if unknown:
            raise ValueError(
                f"Unknown augmentation families {unknown}: choose among {', '.join(AUGMENTATION_FAMILIES)}."
            )
        if len(set(families)) != len(families):
            raise ValueError(f"Augmentation families are listed more than once: {list(families)}.")
        # The order of application is the module's, whatever the order given.
        object.__setattr__(self, "families", tuple(name for name in AUGMENTATION_FAMILIES if name in families))
        if not 0.0 < self.probability <= 1.0:
            raise ValueError(f"The augmentation probability must lie in (0, 1], got {self.probability}.")
        if not 0.0 < self.pitch_semitones <= 24.0:
            raise ValueError(f"pitch_semitones must lie in (0, 24], got {self.pitch_semitones}.")
        if not 1.0 < self.stretch_rate <= 4.0:
            raise ValueError(f"stretch_rate must lie in (1, 4], got {self.stretch_rate}.")
        if self.gain_db <= 0:
            raise ValueError(f"gain_db must be positive, got {self.gain_db}.")
        for name in ("noise_snr_db", "mix_snr_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name} must be (min, max) with min <= max, got {(low, high)}.")
            object.__setattr__(self, name, (float(low), float(high)))
        if self.teacher_view and not set(self.families) - set(GEOMETRIC_FAMILIES):
            raise ValueError(
                "teacher_view draws the teacher's own mix / filter / gain / noise: add at least one of them to the "
                f"families (got {list(self.families)})."
            )

    def to_dict(self) -> dict:
        return {**asdict(self), "families": list(self.families)}


def parse_families(text: str | Iterable[str] | None) -> tuple[str, ...]:
    """`"pitch,gain"`, `["pitch", "gain"]`, `"all"` or `"none"` / empty -> the families (checked by
    `AugmentationConfig`)."""
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [item.strip() for item in items if item.strip()]
    if names == ["all"]:
        return AUGMENTATION_FAMILIES
    if names == ["none"]:
        return ()
    return tuple(names)


def _seed_of(seed: int, epoch: int, key: str, purpose: str) -> int:
    return clip_hash(seed, epoch, key, purpose, num_bytes=4)  # a 32-bit seed (numpy's global generator takes no more)


class _SeededGlobalRandom:
    """Seeds Python's `random` and numpy's global generator (audiomentations' random sources) for one call and restores
    their previous states afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self.states = random.getstate(), np.random.get_state()
        random.seed(self.seed)
        np.random.seed(self.seed)

    def __exit__(self, *exc):
        random.setstate(self.states[0])
        np.random.set_state(self.states[1])


class PretrainingAugmentation:
    """The augmentation of a batch of waveform crops, a pure function of `(seed, epoch, clip keys)` and the batch.

    Args:
        config: an `AugmentationConfig` (or its families, as accepted by `parse_families`).
        seed: the run's seed (the crop positions' seed).
        sampling_rate: of the crops.
    """

    def __init__(self, config: AugmentationConfig | str | Sequence[str], seed: int = 0, sampling_rate=SAMPLING_RATE):
        if not isinstance(config, AugmentationConfig):
            config = AugmentationConfig(families=parse_families(config))
        self.config = config
        self.seed = int(seed)
        self.sampling_rate = int(sampling_rate)
        self._chains = None  # built on first use (audiomentations objects; after pickling into DataLoader workers)

    def __repr__(self) -> str:
        return f"PretrainingAugmentation({self.config}, seed={self.seed})"

    def __getstate__(self):
        return {**self.__dict__, "_chains": None}

    @property
    def enabled(self) -> bool:
        return bool(self.config.families)

    def _build_chains(self):
        import audiomentations as A

        config, p = self.config, self.config.probability
        makers = {
            "pitch": lambda: A.PitchShift(-config.pitch_semitones, config.pitch_semitones, p=p),
            "stretch": lambda: A.TimeStretch(
                1.0 / config.stretch_rate, config.stretch_rate, leave_length_unchanged=True, p=p
            ),
            "filter": lambda: A.OneOf(
                [
                    A.BandPassFilter(p=1.0),
                    A.LowPassFilter(min_cutoff_freq=500.0, max_cutoff_freq=7500.0, p=1.0),
                    A.HighPassFilter(p=1.0),
                    A.SevenBandParametricEQ(p=1.0),
                ],
                p=p,
            ),
            "gain": lambda: A.Gain(-config.gain_db, config.gain_db, p=p),
            "noise": lambda: A.AddColorNoise(*config.noise_snr_db, p=p),
        }
        geometric = [makers[name]() for name in config.families if name in GEOMETRIC_FAMILIES]
        photometric = [makers[name]() for name in config.families if name in makers and name not in GEOMETRIC_FAMILIES]
        self._chains = (A.Compose(geometric) if geometric else None, A.Compose(photometric) if photometric else None)

    def _mix(self, crop: np.ndarray, background: np.ndarray, num_valid: int, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.config.probability:
            return crop
        signal_power = float(np.mean(crop[:num_valid].astype(np.float64) ** 2)) if num_valid else 0.0
        background = background[:num_valid]
        background_power = float(np.mean(background.astype(np.float64) ** 2)) if num_valid else 0.0
        if signal_power == 0.0 or background_power == 0.0:
            return crop
        snr_db = rng.uniform(*self.config.mix_snr_db)
        scale = np.sqrt(signal_power / (background_power * 10.0 ** (snr_db / 10.0)))
        mixed = crop.copy()
        mixed[:num_valid] += (scale * background).astype(np.float32)
        return mixed

    def _apply(self, chain, crop: np.ndarray, num_valid: int, seed: int) -> np.ndarray:
        if chain is None or num_valid == 0:
            return crop
        with _SeededGlobalRandom(seed):
            out = chain(
                samples=np.ascontiguousarray(crop[:num_valid], dtype=np.float32), sample_rate=self.sampling_rate
            )
        result = np.zeros_like(crop)
        result[:num_valid] = out[:num_valid]
        return result

    def augment_batch(
        self, crops: np.ndarray, num_valid_samples: Sequence[int], keys: Sequence[str], epoch: int
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Augments `(batch, samples)` float32 crops (row `i` holds `num_valid_samples[i]` real samples, then zeros)
        of the clips `keys` in `epoch`. Returns the augmented crops (the zero padding stays zero), or `(student's,
        teacher's)` with `teacher_view`."""
        if not self.enabled:
            return (crops, crops) if self.config.teacher_view else crops
        if self._chains is None:
            self._build_chains()
        geometric, photometric = self._chains
        crops = np.asarray(crops, dtype=np.float32)
        views = ("student", "teacher") if self.config.teacher_view else ("student",)
        outputs = {view: np.empty_like(crops) for view in views}
        for row, (key, num_valid) in enumerate(zip(keys, num_valid_samples)):
            num_valid = int(num_valid)
            shared = self._apply(geometric, crops[row], num_valid, _seed_of(self.seed, epoch, key, "geometric"))
            for view in views:
                crop = shared
                if "mix" in self.config.families and len(crops) > 1:
                    rng = np.random.default_rng(_seed_of(self.seed, epoch, key, f"mix:{view}"))
                    crop = self._mix(crop, crops[(row + 1) % len(crops)], num_valid, rng)
                seed = _seed_of(self.seed, epoch, key, f"photometric:{view}")
                outputs[view][row] = self._apply(photometric, crop, num_valid, seed)
        return (outputs["student"], outputs["teacher"]) if self.config.teacher_view else outputs["student"]

    def collate(self, examples: list[dict]) -> dict:
        """`pretraining_data.collate_crops` of the augmented crops (the DataLoader's `collate_fn`, so it runs in its
        workers); the stream's items carry their `epoch`. With `teacher_view` the batch also has
        `teacher_input_values`."""
        import torch

        from .audio_io import pcm_to_float32
        from .pretraining_data import collate_crops

        batch = collate_crops(examples)
        augmented = self.augment_batch(
            pcm_to_float32(batch["input_values"].numpy()),  # int16 crops of a prepared corpus: float32 from here on
            batch["num_valid_samples"].tolist(),
            batch["example_ids"],
            int(examples[0]["epoch"]),
        )
        if self.config.teacher_view:
            batch["input_values"], batch["teacher_input_values"] = (torch.from_numpy(view) for view in augmented)
        else:
            batch["input_values"] = torch.from_numpy(augmented)
        return batch


__all__ = [
    "AUGMENTATION_FAMILIES",
    "AugmentationConfig",
    "GEOMETRIC_FAMILIES",
    "PretrainingAugmentation",
    "parse_families",
]
