# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The synthetic demo corpus of `examples/run_pretraining.py` (and of the tests and benchmarks): five kinds of
synthesized sounds written as FLAC files, so that the demo runs without any download.

Not part of the `matpac_hf` package: import it with `examples/` on `sys.path` (the scripts in `examples/` do so by
being there; tests and benchmarks insert the folder).
"""

import csv
import os
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

from matpac_hf.configuration_matpac import SAMPLING_RATE, num_samples_for_frames
from matpac_hf.pretraining_data import CROP_FRAMES


CROP_SAMPLES = num_samples_for_frames(CROP_FRAMES)
NUM_PROBE_FOLDS = 5

DEMO_CLASSES = ("harmonic_tone", "chirps", "noise_bursts", "click_rhythm", "am_fm_texture")


def _envelope(num_samples: int, sampling_rate: int, attack: float, release: float) -> np.ndarray:
    env = np.ones(num_samples)
    attack_n, release_n = max(1, int(attack * sampling_rate)), max(1, int(release * sampling_rate))
    env[:attack_n] = np.linspace(0.0, 1.0, min(attack_n, num_samples))[:num_samples]
    env[-release_n:] *= np.linspace(1.0, 0.0, min(release_n, num_samples))
    return env


def _band_filter(signal: np.ndarray, sampling_rate: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(signal.shape[0], 1.0 / sampling_rate)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    return np.fft.irfft(spectrum, n=signal.shape[0])


def synthesize_sound(kind: str, duration: float, sampling_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One mono clip (float64 in about [-1, 1]) of the given kind with random parameters."""
    n = int(duration * sampling_rate)
    t = np.arange(n) / sampling_rate
    out = np.zeros(n)
    if kind == "harmonic_tone":  # notes of a harmonic tone with vibrato
        position = 0
        while position < n:
            note_n = min(n - position, int(rng.uniform(0.4, 1.5) * sampling_rate))
            f0 = 110.0 * 2 ** rng.uniform(0, 3)
            vibrato = 1 + rng.uniform(0.005, 0.03) * np.sin(2 * np.pi * rng.uniform(4, 7) * t[:note_n])
            phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sampling_rate
            slope = rng.uniform(0.7, 2.0)
            note = sum(np.sin(k * phase) / k**slope for k in range(1, int(rng.integers(3, 10))) if k * f0 < 7000)
            out[position : position + note_n] = note * _envelope(note_n, sampling_rate, 0.02, 0.1)
            position += note_n
    elif kind == "chirps":  # exponential sweeps up or down, with gaps
        position = int(rng.uniform(0, 0.3) * sampling_rate)
        while position < n:
            chirp_n = min(n - position, int(rng.uniform(0.2, 1.2) * sampling_rate))
            f_start, f_end = 200 * 2 ** rng.uniform(0, 5), 200 * 2 ** rng.uniform(0, 5)
            freq = f_start * (f_end / f_start) ** (np.arange(chirp_n) / chirp_n)
            chirp = np.sin(2 * np.pi * np.cumsum(freq) / sampling_rate)
            out[position : position + chirp_n] = chirp * _envelope(chirp_n, sampling_rate, 0.01, 0.05)
            position += chirp_n + int(rng.uniform(0.05, 0.4) * sampling_rate)
    elif kind == "noise_bursts":  # white noise bursts filtered in a random band
        for _ in range(int(rng.integers(4, 14))):
            burst_n = int(rng.uniform(0.05, 0.5) * sampling_rate)
            start = int(rng.integers(0, max(1, n - burst_n)))
            center = 300 * 2 ** rng.uniform(0, 4)
            width = 2 ** rng.uniform(0.3, 1.0)
            burst = _band_filter(rng.standard_normal(burst_n), sampling_rate, center / width, center * width)
            burst *= _envelope(burst_n, sampling_rate, 0.005, 0.05) / (np.abs(burst).max() + 1e-9)
            out[start : start + burst_n] += burst[: n - start]
    elif kind == "click_rhythm":  # click trains at a tempo, each click a decaying resonance
        period = 60.0 / rng.uniform(80, 240) / int(rng.choice([1, 2, 4]))
        resonance_hz, decay = rng.uniform(800, 5000), rng.uniform(60, 300)
        click_n = int(0.05 * sampling_rate)
        click = np.sin(2 * np.pi * resonance_hz * t[:click_n]) * np.exp(-decay * t[:click_n])
        accents = rng.uniform(0.3, 1.0, size=8)
        for i, start_time in enumerate(np.arange(rng.uniform(0, period), duration, period)):
            start = int(start_time * sampling_rate)
            stop = min(n, start + click_n)
            out[start:stop] += accents[i % 8] * click[: stop - start]
    elif kind == "am_fm_texture":  # a carrier with slow FM and faster AM, plus a detuned partial
        carrier = 300 * 2 ** rng.uniform(0, 3)
        fm = 1 + rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(0.3, 3) * t)
        am = 1 - rng.uniform(0.5, 1.0) * 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 20) * t))
        phase = 2 * np.pi * np.cumsum(carrier * fm) / sampling_rate
        out = am * (np.sin(phase) + 0.5 * np.sin(1.5 * phase + rng.uniform(0, np.pi)))
    else:
        raise ValueError(f"Unknown demo sound kind {kind!r}; expected one of {DEMO_CLASSES}.")
    out = out / (np.abs(out).max() + 1e-9) * rng.uniform(0.3, 0.8)
    noise_level = 10 ** (rng.uniform(-45, -28) / 20)
    return out + noise_level * rng.standard_normal(n)


@dataclass
class DemoCorpus:
    """Paths and facts of a demo corpus (`build_demo_corpus`, or the real-audio one of `real_audio_corpus.py`)."""

    pretrain_dir: str  # unlabelled audiofolder for pretraining (the synthetic one holds one corrupted file)
    probe_dir: str  # labelled audiofolder (metadata.csv: file_name,label,fold) for the linear probe
    num_clips: int  # readable pretraining clips
    corrupted_files: list[str] = field(default_factory=list)
    class_names: tuple[str, ...] = DEMO_CLASSES
    # linear-probe tasks: name -> labelled audiofolder with a fold column (the synthetic corpus has one task)
    probe_tasks: dict[str, str] = field(default_factory=dict)
    kind: str = "synthetic"


def build_demo_corpus(
    output_dir: str,
    num_clips: int = 200,
    seed: int = 0,
    num_probe_clips_per_class: int = 24,
    probe_duration: float = 3.0,
    min_duration: float = 6.5,
    max_duration: float = 10.0,
) -> DemoCorpus:
    """Writes a synthetic demo corpus of FLAC files (no download needed).

    - `output_dir/pretrain/`: `num_clips` clips of 6.5-10 s of the five `DEMO_CLASSES` kinds, mostly 16 kHz mono; about
      one in five is stereo and one in five is 44.1 kHz (exercising down-mix and resampling), plus one corrupted file
      (`clip_00000_corrupted.flac`, a FLAC header followed by garbage) that the stream must skip and count.
    - `output_dir/probe/`: `num_probe_clips_per_class` clips of `probe_duration` s per kind, 16 kHz mono, with
      `metadata.csv` (`file_name,label,fold`): a small labelled task for a linear probe, each class spread evenly
      over `NUM_PROBE_FOLDS` cross-validation folds (numbered from 1).

    The content depends only on `seed`. Existing files with the same names are overwritten.
    """
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}.")
    if not SAMPLING_RATE * min_duration >= CROP_SAMPLES:
        raise ValueError(f"min_duration must give at least one crop ({CROP_SAMPLES / SAMPLING_RATE:.3f} s).")
    rng = np.random.default_rng(seed)
    pretrain_dir, probe_dir = os.path.join(output_dir, "pretrain"), os.path.join(output_dir, "probe")
    os.makedirs(pretrain_dir, exist_ok=True)
    os.makedirs(probe_dir, exist_ok=True)
    for index in range(num_clips):
        kind = DEMO_CLASSES[index % len(DEMO_CLASSES)]
        sampling_rate = 44_100 if rng.random() < 0.2 else SAMPLING_RATE
        duration = rng.uniform(min_duration, max_duration)
        clip = synthesize_sound(kind, duration, sampling_rate, rng)
        if rng.random() < 0.2:  # stereo: the same sound with a different gain and a little decorrelated noise
            clip = np.stack([clip, 0.7 * clip + 0.01 * rng.standard_normal(clip.shape[0])], axis=1)
        sf.write(os.path.join(pretrain_dir, f"clip_{index:05d}.flac"), clip.astype(np.float32), sampling_rate)
    # Named to sort right after the first clip, so that it is read early in every epoch.
    corrupted = os.path.join(pretrain_dir, "clip_00000_corrupted.flac")
    with open(corrupted, "wb") as handle:
        handle.write(b"fLaC" + rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes())
    with open(os.path.join(probe_dir, "metadata.csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "label", "fold"])
        for index in range(num_probe_clips_per_class * len(DEMO_CLASSES)):
            kind = DEMO_CLASSES[index % len(DEMO_CLASSES)]
            clip = synthesize_sound(kind, probe_duration, SAMPLING_RATE, rng)
            file_name = f"probe_{index:05d}.flac"
            sf.write(os.path.join(probe_dir, file_name), clip.astype(np.float32), SAMPLING_RATE)
            writer.writerow([file_name, kind, 1 + (index // len(DEMO_CLASSES)) % NUM_PROBE_FOLDS])
    return DemoCorpus(
        pretrain_dir=pretrain_dir,
        probe_dir=probe_dir,
        num_clips=num_clips,
        corrupted_files=[corrupted],
        probe_tasks={"synthetic sounds": probe_dir},
    )
