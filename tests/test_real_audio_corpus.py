"""The real-audio corpus builder (examples/real_audio_corpus.py): MIDI writing, fluidsynth rendering and slicing, speech
synthesis. Skipped where the Debian packages are not installed."""

import os
import shutil

import numpy as np
import pytest
import real_audio_corpus


SOUNDFONTS = real_audio_corpus.available_sources()["soundfonts"]
needs_fluidsynth = pytest.mark.skipif(not SOUNDFONTS, reason="fluidsynth and a GM soundfont are not installed")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_write_midi_encodes_delta_times_and_messages(tmp_path):
    path = str(tmp_path / "a.mid")
    real_audio_corpus.write_midi(path, [(0.0, 0xC0, 5), (0.2, 0x90, 60, 100), (1.5, 0x80, 60, 0)])
    data = open(path, "rb").read()
    assert data[:4] == b"MThd" and data[12:14] == (1000).to_bytes(2, "big")  # 1000 ticks per beat
    track = data[22:]
    # tempo event, then program change at delta 0, note-on at delta 200, note-off at delta 1300 (2-byte varint)
    assert b"\x00\xc0\x05" in track
    assert b"\x81\x48\x90\x3c\x64" in track  # 200 = 0x81 0x48
    assert b"\x8a\x14\x80\x3c\x00" in track  # 1300 = 0x8a 0x14
    assert track.endswith(b"\x00\xff\x2f\x00")


@needs_fluidsynth
def test_rendered_notes_land_in_their_slots_at_their_pitch(tmp_path):
    notes = [
        dict(channel=0, program=0, pitches=[69], velocity=110, duration=0.8),  # A4, 440 Hz
        dict(channel=0, program=0, pitches=[57], velocity=110, duration=0.8),  # A3, 220 Hz
    ]
    soundfont = min(SOUNDFONTS, key=os.path.getsize)
    slices = real_audio_corpus.render_note_slices(notes, soundfont, str(tmp_path), slot=2.0)
    assert [len(s) for s in slices] == [32000, 32000]
    for audio, expected in zip(slices, (440.0, 220.0)):
        note = audio[: real_audio_corpus.SAMPLING_RATE]
        assert np.sqrt(np.mean(note**2)) > 1e-2  # the note sounds in its own slot
        assert np.sqrt(np.mean(audio[-4000:] ** 2)) < 0.1 * np.sqrt(np.mean(note**2))  # and has died out at its end
        spectrum = np.abs(np.fft.rfft(note * np.hanning(len(note))))
        frequencies = np.fft.rfftfreq(len(note), 1 / real_audio_corpus.SAMPLING_RATE)
        band = (frequencies > 100) & (frequencies < 1000)
        peak = frequencies[band][np.argmax(spectrum[band])]
        assert abs(peak - expected) < 0.03 * expected or abs(peak - 2 * expected) < 0.03 * expected


@needs_espeak
def test_speech_is_16k_trimmed_and_voiced(tmp_path):
    rng = np.random.default_rng(0)
    audio = real_audio_corpus.speak("seven", ("espeak", "en-us", "m1"), str(tmp_path), rng)
    assert audio.dtype == np.float32 and 0.2 * 16000 < len(audio) < 1.5 * 16000
    assert np.abs(audio[:400]).max() < np.abs(audio).max()  # leading silence cut to the margin


def test_voice_groups_are_disjoint():
    groups = [set(group) for group in real_audio_corpus.ESPEAK_VARIANT_GROUPS]
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # a voice variant is in one digits fold only
