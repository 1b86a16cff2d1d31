# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""A small real-audio corpus rendered offline from Debian packages: unlabelled pretraining clips and three labelled
linear-probe tasks whose test folds hold out whole recording conditions (unseen voices, GM programs, drum kits).

    apt-get install espeak-ng flite fluidsynth fluid-soundfont-gm timgm6mb-soundfont \
        musescore-general-soundfont-small csound-soundfont
    python examples/real_audio_corpus.py --output_dir real_audio_corpus

Sources (whatever of them is installed; `available_sources()` says which):
  * speech: `espeak-ng` (English accents x voice variants, random speed and pitch) and `flite` (its built-in voices);
  * music: `fluidsynth` rendering General MIDI notes with every installed GM soundfont (FluidR3, TimGM6mb, the
    MuseScore General sf3, the csound GM bank), and GM drum kits on the percussion channel.

Layout of `output_dir` (16 kHz mono 16-bit WAV):
  pretrain/<source>/*.wav           unlabelled clips of 1-6 s: spoken phrases, melodies and chords, drum patterns
  tasks/<task>/*.wav + metadata.csv  labelled clips; `metadata.csv` has `file_name,label,fold` where the fold is a
                                     recording condition, so cross-validation over folds tests unseen conditions:
     digits       10 spoken digits, folds = voice variant groups (the test voices are never in the training folds)
     instruments  11 GM instrument families (piano ... synth lead) played by every soundfont, folds = the program
                  within its family (fold k tests the k-th of the family's 8 GM programs: instruments never heard in
                  training, e.g. "steel guitar" while training on the other 7 guitars)
     drums        10 drum sounds (kick, snare, hats, toms, cymbals, clap, cowbell), folds = GM drum kits (standard,
                  room, power, electronic, TR-808, jazz, brush, orchestra): kits never heard in training
  Folds are not soundfonts: the Debian soundfonts share samples (MuseScore General is built on FluidR3's samples, the
  csound GM bank and TimGM6mb have identical drums, and a soundfont without a kit falls back to its standard kit), so
  a leave-one-soundfont-out test would test on sounds seen in training. Drum clips that duplicate (spectral
  correlation > 0.995) a clip of another kit are dropped for the same reason.
  corpus.json                        what was built (the build arguments, clip counts, hours), the cache marker

Everything is seeded: the same arguments and packages give the same corpus.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import tempfile

import numpy as np
import soundfile

from matpac_hf.audio_io import decode_audio
from matpac_hf.configuration_matpac import SAMPLING_RATE


SOUNDFONT_FOLDERS = ("/usr/share/sounds/sf2", "/usr/share/sounds/sf3")
# Installed GM soundfonts, by Debian package file name (the `default-GM` links are aliases of one of these).
SOUNDFONT_FILES = ("FluidR3_GM.sf2", "TimGM6mb.sf2", "MuseScore_General.sf3", "sf_GMbank.sf2")
# The Debian packages of the audio sources, listed once in real_audio_debs.txt (also read by `make real-audio-debs`)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "real_audio_debs.txt")) as _packages:
    DEBIAN_PACKAGES = " ".join(_packages.read().split())

ESPEAK_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
# espeak-ng voice variants in 5 groups: a digits fold holds out one group (its voices never reach the training folds).
ESPEAK_VARIANT_GROUPS = (
    ("m1", "f1", "klatt"),
    ("m2", "f2", "klatt2"),
    ("m3", "f3", "klatt3"),
    ("m4", "f4", "croak"),
    ("m5", "f5", "m7"),
)
FLITE_VOICES = ("kal16", "awb", "rms", "slt", "kal")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PHRASE_WORDS = (
    "the quick brown fox jumps over a lazy dog while seven small birds sing near the old river bank under a grey "
    "sky and children laugh at the market where people buy bread fish apples and warm tea before the train leaves "
    "for the city at noon every day my friend reads a long story about ships mountains winter storms and golden "
    "light then we walk home slowly talking about music numbers colours weather and plans for next summer"
).split()

# GM instrument families (8 programs each) of the instruments task; pitch range (MIDI notes) played per family.
INSTRUMENT_FAMILIES = {
    "piano": (0, (48, 72)),
    "chromatic_percussion": (8, (60, 84)),
    "organ": (16, (48, 72)),
    "guitar": (24, (45, 69)),
    "bass": (32, (28, 52)),
    "strings": (40, (48, 76)),
    "ensemble": (48, (48, 72)),
    "brass": (56, (48, 72)),
    "reed": (64, (52, 76)),
    "pipe": (72, (64, 88)),
    "synth_lead": (80, (52, 76)),
}
# GM percussion keys (channel 10) of the drums task, and the GM drum kits (bank 128 programs) rendered.
DRUM_SOUNDS = {
    "kick": 36,
    "snare": 38,
    "hand_clap": 39,
    "low_tom": 41,
    "closed_hihat": 42,
    "high_tom": 50,
    "open_hihat": 46,
    "crash": 49,
    "ride": 51,
    "cowbell": 56,
}
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40, 48)  # standard, room, power, electronic, TR-808, jazz, brush, orchestra


def available_sources() -> dict:
    """Which synthesizers and soundfonts are installed: {"espeak-ng": bool, "flite": bool, "soundfonts": [paths]}."""
    soundfonts = []
    for name in SOUNDFONT_FILES:
        for folder in SOUNDFONT_FOLDERS:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                soundfonts.append(path)
                break
    have_fluidsynth = shutil.which("fluidsynth") is not None
    return {
        "espeak-ng": shutil.which("espeak-ng") is not None,
        "flite": shutil.which("flite") is not None,
        "soundfonts": soundfonts if have_fluidsynth else [],
    }


def is_available(minimum_soundfonts: int = 2) -> bool:
    """True when the corpus can be built with all three tasks (speech, and at least two soundfonts for unseen-soundfont
    folds)."""
    sources = available_sources()
    return sources["espeak-ng"] and len(sources["soundfonts"]) >= minimum_soundfonts


# ------------------------------------------------------------------------------------------------ audio helpers


def load_16k(path: str) -> np.ndarray:
    """A synthesizer's output file as float32 mono at 16 kHz (matpac_hf.audio_io: down-mix, soxr resampling)."""
    return decode_audio(path, SAMPLING_RATE)


def write_wav(path: str, audio: np.ndarray):
    """16 kHz mono 16-bit WAV, scaled down when it would clip."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    soundfile.write(path, audio * (0.99 / peak) if peak > 0.99 else audio, SAMPLING_RATE, subtype="PCM_16")


def trim_silence(audio: np.ndarray, threshold: float = 1e-3, margin: int = 800) -> np.ndarray:
    """Cuts leading and trailing samples quieter than `threshold` (keeping `margin` samples)."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio[:0]
    return audio[max(0, loud[0] - margin) : loud[-1] + margin]


# ------------------------------------------------------------------------------------------------ speech


def speak(text: str, voice: tuple, workdir: str, rng: np.random.Generator) -> np.ndarray:
    """`voice` = ("espeak", accent, variant) or ("flite", name); random speed and pitch for espeak."""
    path = os.path.join(workdir, "speech.wav")
    if voice[0] == "espeak":
        speed, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
        command = ["espeak-ng", "-v", f"{voice[1]}+{voice[2]}", "-s", str(speed), "-p", str(pitch), "-w", path, text]
    else:
        command = ["flite", "-voice", voice[1], "-t", text, "-o", path]
    subprocess.run(command, check=True, capture_output=True)
    return trim_silence(load_16k(path))


def espeak_voices(groups=ESPEAK_VARIANT_GROUPS) -> list[tuple]:
    return [("espeak", accent, variant) for group in groups for variant in group for accent in ESPEAK_ACCENTS]


# ------------------------------------------------------------------------------------------------ MIDI rendering


def _variable_length(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: str, events: list[tuple]):
    """A type-0 standard MIDI file at 1 tick = 1 ms. `events`: (time in s, status byte, data bytes...)."""
    track = bytearray(b"\x00\xff\x51\x03" + (1_000_000).to_bytes(3, "big"))  # tempo: 1 s per beat
    last = 0
    for time_s, *message in sorted(events, key=lambda e: (e[0], e[1] & 0xF0 != 0xC0)):
        tick = int(round(time_s * 1000))
        track += _variable_length(tick - last) + bytes(message)
        last = tick
    track += b"\x00\xff\x2f\x00"
    with open(path, "wb") as handle:
        handle.write(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 1000) + b"MTrk" + struct.pack(">I", len(track)) + track)


def render_midi(events: list[tuple], soundfont: str, workdir: str, effects: bool = False) -> np.ndarray:
    """Renders `events` with fluidsynth at 16 kHz (reverb and chorus off unless `effects`) -> float32 mono."""
    midi, out = os.path.join(workdir, "notes.mid"), os.path.join(workdir, "render.wav")
    write_midi(midi, events)
    flag = "1" if effects else "0"
    command = [
        "fluidsynth",
        "-ni",
        "-q",
        "-r",
        str(SAMPLING_RATE),
        "-g",
        "0.6",
        "-o",
        f"synth.reverb.active={flag}",
        "-o",
        f"synth.chorus.active={flag}",
        "-F",
        out,
        "-T",
        "wav",
        "-O",
        "s16",
        soundfont,
        midi,
    ]
    subprocess.run(command, check=True, capture_output=True)
    return load_16k(out)


def _program_change(channel: int, program: int, time_s: float, bank: int | None = None) -> list[tuple]:
    events = [] if bank is None else [(time_s, 0xB0 | channel, 0, bank)]
    return events + [(time_s, 0xC0 | channel, program)]


def render_note_slices(notes: list[dict], soundfont: str, workdir: str, slot: float, effects=False) -> list:
    """Renders each note dict (channel, program, bank, pitches, velocity, duration) in its own `slot` seconds of one
    MIDI file and returns one audio slice per note (one fluidsynth call per soundfont: loading one is the slow part)."""
    events = []
    for index, note in enumerate(notes):
        start = index * slot
        events += _program_change(note["channel"], note["program"], start, note.get("bank"))
        for pitch in note["pitches"]:
            events.append((start + 0.01, 0x90 | note["channel"], pitch, note["velocity"]))
            events.append((start + 0.01 + note["duration"], 0x80 | note["channel"], pitch, 0))
    audio = render_midi(events, soundfont, workdir, effects)
    size = int(slot * SAMPLING_RATE)
    audio = np.pad(audio, (0, max(0, len(notes) * size - len(audio))))
    return [audio[i * size : (i + 1) * size] for i in range(len(notes))]


# ------------------------------------------------------------------------------------------------ the corpus


def _write_task(folder: str, rows: list[tuple]):
    """rows: (file name, audio, label, fold); writes the WAVs and metadata.csv."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metadata.csv"), "w") as handle:
        handle.write("file_name,label,fold\n")
        for name, audio, label, fold in rows:
            write_wav(os.path.join(folder, name), audio)
            handle.write(f"{name},{label},{fold}\n")


def _loud_enough(audio: np.ndarray, minimum_rms: float = 3e-3) -> bool:
    return audio.size > 0 and float(np.sqrt(np.mean(audio**2))) > minimum_rms


def build_digits_task(folder: str, rng: np.random.Generator, workdir: str, renditions: int = 2) -> int:
    rows = []
    flite = available_sources()["flite"]
    for fold, group in enumerate(ESPEAK_VARIANT_GROUPS):
        voices = espeak_voices([group]) + ([("flite", FLITE_VOICES[fold])] if flite else [])
        for digit in DIGITS:
            for voice in rng.choice(len(voices), size=renditions * 4, replace=False):
                voice = voices[voice]
                audio = speak(digit, voice, workdir, rng)
                if _loud_enough(audio):
                    rows.append((f"{digit}_{'_'.join(voice)}_{len(rows)}.wav", audio, digit, f"voices{fold}"))
    _write_task(folder, rows)
    return len(rows)


def build_instruments_task(folder: str, soundfonts: list[str], rng: np.random.Generator, workdir: str) -> int:
    rows = []
    for soundfont in soundfonts:
        name = os.path.splitext(os.path.basename(soundfont))[0]
        notes, labels = [], []
        for family, (first_program, (low, high)) in INSTRUMENT_FAMILIES.items():
            for program in range(first_program, first_program + 8):
                for _ in range(2):
                    notes.append(
                        dict(
                            channel=0,
                            program=program,
                            pitches=[int(rng.integers(low, high + 1))],
                            velocity=int(rng.integers(70, 120)),
                            duration=float(rng.uniform(0.6, 1.2)),
                        )
                    )
                    labels.append((family, program))
        for (family, program), audio in zip(labels, render_note_slices(notes, soundfont, workdir, slot=2.5)):
            audio = trim_silence(audio[: int(1.6 * SAMPLING_RATE)])
            if _loud_enough(audio) and len(audio) >= SAMPLING_RATE // 4:
                fold = f"program{program - INSTRUMENT_FAMILIES[family][0]}"
                rows.append((f"{family}_{program}_{name}_{len(rows)}.wav", audio, family, fold))
    _write_task(folder, rows)
    return len(rows)


def _spectral_signature(audio: np.ndarray) -> np.ndarray:
    spectrum = np.log(np.abs(np.fft.rfft(audio[:SAMPLING_RATE], n=SAMPLING_RATE))[::8] + 1e-4)
    return (spectrum - spectrum.mean()) / (spectrum.std() + 1e-8)


def build_drums_task(folder: str, soundfonts: list[str], workdir: str) -> int:
    rows, signatures = [], []
    for soundfont in soundfonts:
        name = os.path.splitext(os.path.basename(soundfont))[0]
        notes, labels = [], []
        for kit in DRUM_KITS:
            for sound, key in DRUM_SOUNDS.items():
                for velocity in (70, 110):
                    notes.append(
                        dict(channel=9, program=kit, bank=128, pitches=[key], velocity=velocity, duration=0.3)
                    )
                    labels.append((sound, kit))
        for (sound, kit), audio in zip(labels, render_note_slices(notes, soundfont, workdir, slot=2.0)):
            audio = trim_silence(audio[: int(1.0 * SAMPLING_RATE)])
            if not (_loud_enough(audio, 1e-3) and len(audio) >= SAMPLING_RATE // 10):
                continue
            signature, fold = _spectral_signature(audio), f"kit{kit}"
            if any(
                label == sound and other_fold != fold and float(signature @ other) / len(signature) > 0.995
                for label, other_fold, other in signatures
            ):
                continue  # the same sample as in another kit (a fallback kit, or a soundfont sharing samples)
            signatures.append((sound, fold, signature))
            rows.append((f"{sound}_kit{kit}_{name}_{len(rows)}.wav", audio, sound, fold))
    _write_task(folder, rows)
    return len(rows)


def build_pretraining_clips(folder: str, num_clips: int, soundfonts: list[str], rng, workdir: str) -> float:
    """Unlabelled clips of 1-6 s, a third each of speech phrases, melodies/chords and drum patterns (as far as the
    sources are installed). Returns the total duration in seconds."""
    sources = available_sources()
    speech_voices = espeak_voices() + ([("flite", v) for v in FLITE_VOICES] if sources["flite"] else [])
    kinds = (["speech"] if sources["espeak-ng"] else []) + (["music", "drums"] if soundfonts else [])
    if not kinds:
        raise RuntimeError(f"No audio source installed; apt-get install {DEBIAN_PACKAGES}")
    counts = {kind: num_clips // len(kinds) + (i < num_clips % len(kinds)) for i, kind in enumerate(kinds)}
    total = 0.0
    for kind in kinds:
        os.makedirs(os.path.join(folder, kind), exist_ok=True)
    # speech: phrases of random words and numbers
    for index in range(counts.get("speech", 0)):
        for _ in range(5):
            words = rng.choice(PHRASE_WORDS, size=int(rng.integers(2, 14))).tolist()
            if rng.random() < 0.3:
                words.insert(int(rng.integers(0, len(words) + 1)), str(int(rng.integers(0, 10_000))))
            audio = speak(" ".join(words), speech_voices[int(rng.integers(len(speech_voices)))], workdir, rng)
            audio = audio[: 6 * SAMPLING_RATE]
            if len(audio) >= SAMPLING_RATE:
                break
        else:
            continue
        write_wav(os.path.join(folder, "speech", f"{index:05d}.wav"), audio)
        total += len(audio) / SAMPLING_RATE
    # music and drums: phrases rendered per soundfont, one fluidsynth call per soundfont and kind
    for kind in ("music", "drums"):
        if kind not in counts:
            continue
        per_font = [
            counts[kind] // len(soundfonts) + (i < counts[kind] % len(soundfonts)) for i in range(len(soundfonts))
        ]
        index = 0
        for soundfont, count in zip(soundfonts, per_font):
            phrases, lengths = [], []
            for _ in range(count):
                length = float(rng.uniform(1.0, 6.0))
                phrases.append(_music_phrase(rng, length) if kind == "music" else _drum_phrase(rng, length))
                lengths.append(length)
            slot = 7.5
            events = []
            for i, phrase in enumerate(phrases):
                events += [(i * slot + t, *message) for t, *message in phrase]
            audio = render_midi(events, soundfont, workdir, effects=bool(rng.random() < 0.5))
            audio = np.pad(audio, (0, max(0, int(len(phrases) * slot * SAMPLING_RATE) - len(audio))))
            for i, length in enumerate(lengths):
                start = int(i * slot * SAMPLING_RATE)
                clip = audio[start : start + int(length * SAMPLING_RATE)]
                if _loud_enough(clip):
                    write_wav(os.path.join(folder, kind, f"{index:05d}.wav"), clip)
                    total += len(clip) / SAMPLING_RATE
                    index += 1
    return total


def _music_phrase(rng, length: float) -> list[tuple]:
    """A random melody, arpeggio or chord sequence on one or two GM programs (channels 0 and 1)."""
    events = []
    for channel in range(1 + int(rng.random() < 0.4)):
        events += _program_change(channel, int(rng.integers(0, 96)), 0.0)
        low = int(rng.integers(36, 72))
        time_s = 0.0
        while time_s < length - 0.2:
            duration = float(rng.choice([0.125, 0.25, 0.5, 0.75, 1.0]))
            chord = [0] if rng.random() < 0.7 else [0, 4, 7] if rng.random() < 0.5 else [0, 3, 7]
            root = low + int(rng.integers(0, 13))
            velocity = int(rng.integers(50, 120))
            for interval in chord:
                events.append((time_s, 0x90 | channel, root + interval, velocity))
                events.append((min(time_s + duration, length), 0x80 | channel, root + interval, 0))
            time_s += duration
    return events


def _drum_phrase(rng, length: float) -> list[tuple]:
    """A random drum pattern on a 16th-note grid at a random tempo, on a random GM kit."""
    events = _program_change(9, int(rng.choice(DRUM_KITS)), 0.0, bank=128)
    sixteenth = 60.0 / float(rng.uniform(70, 160)) / 4
    keys = [36, 38, 42, 46, 41, 45, 48, 50, 49, 51, 39, 37, 54, 56, 75, 70]
    pattern = {key: rng.random(16) < p for key, p in zip(keys, rng.uniform(0.0, 0.5, len(keys)) ** 2 * 2)}
    step = 0
    while step * sixteenth < length - 0.1:
        for key, hits in pattern.items():
            if hits[step % 16]:
                events.append((step * sixteenth, 0x99, key, int(rng.integers(60, 127))))
                events.append((step * sixteenth + 0.1, 0x89, key, 0))
        step += 1
    return events


def build_real_audio_corpus(output_dir: str, num_pretraining_clips: int = 2400, seed: int = 0) -> dict:
    """Builds (or reuses, when `corpus.json` matches) the corpus in `output_dir`; returns its description. Raises
    RuntimeError naming the Debian packages to install when a source is missing."""
    sources = available_sources()
    if not is_available():
        raise RuntimeError(
            f"The real-audio corpus needs espeak-ng, fluidsynth and at least two GM soundfonts; found {sources}. "
            f"Install them with: apt-get install {DEBIAN_PACKAGES}"
        )
    wanted = {"num_pretraining_clips": num_pretraining_clips, "seed": seed, "sources": sources, "version": 1}
    marker = os.path.join(output_dir, "corpus.json")
    if os.path.isfile(marker):
        with open(marker) as handle:
            built = json.load(handle)
        if built.get("wanted") == wanted:
            return built
    if os.path.isdir(output_dir):
        shutil.rmtree(output_dir)
    os.makedirs(output_dir)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as workdir:
        tasks = {
            "digits": build_digits_task(os.path.join(output_dir, "tasks", "digits"), rng, workdir),
            "instruments": build_instruments_task(
                os.path.join(output_dir, "tasks", "instruments"), sources["soundfonts"], rng, workdir
            ),
            "drums": build_drums_task(os.path.join(output_dir, "tasks", "drums"), sources["soundfonts"], workdir),
        }
        seconds = build_pretraining_clips(
            os.path.join(output_dir, "pretrain"), num_pretraining_clips, sources["soundfonts"], rng, workdir
        )
    pretraining_files = sum(len(files) for _, _, files in os.walk(os.path.join(output_dir, "pretrain")))
    built = {
        "wanted": wanted,
        "pretraining_clips": pretraining_files,
        "pretraining_hours": round(seconds / 3600, 3),
        "task_clips": tasks,
    }
    with open(marker, "w") as handle:
        json.dump(built, handle, indent=2)
    return built


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="corpus folder (reused when it matches)")
    parser.add_argument("--num_pretraining_clips", type=int, default=2400, help="unlabelled pretraining clips")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    args = parser.parse_args(argv)
    print(json.dumps(build_real_audio_corpus(args.output_dir, args.num_pretraining_clips, args.seed), indent=2))


if __name__ == "__main__":
    main()
