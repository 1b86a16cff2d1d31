# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Audio I/O, in one place: decoding (soundfile), down-mix, resampling (soxr), the list of audio file extensions and
the bad-file policy, for the pretraining stream, the pipeline, the labelled-dataset helpers and every script.

```python
>>> from matpac_hf.audio_io import decode_audio, decode_audio_column
>>> waveform = decode_audio("clip.wav")  # float32 mono at 16 kHz: a path, bytes, {"bytes", "path"} or {"array", ...}
>>> dataset = dataset.cast_column("audio", Audio(decode=False))
>>> decode = decode_audio_column("audio", bad_audio="skip")  # -> {"array", "sampling_rate", "path"}
>>> dataset = dataset.map(decode, batched=True, features=decode.features(dataset.features))
```

Decoding goes through soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff, au): an `Audio(decode=False)`
column gives `{"bytes", "path"}` and soundfile reads it, without `torchcodec` (which `datasets` >= 4 needs to decode
`Audio` columns). Containers libsndfile cannot read (`FFMPEG_AUDIO_EXTENSIONS`: .m4a, .aac, .mp4, .webm, and opus in
mp4) are decoded through torchcodec (FFmpeg) when it is installed; otherwise they are refused like any unreadable file,
with the install that fixes it (`FFMPEG_INSTALL_HINT`), and `list_audio_files` lists them all the same.

The bad-file policy (`bad_audio=` in functions, `--bad_audio` in every script) is one of `BAD_AUDIO_POLICIES`:
`"skip"` skips an unreadable / empty / non-finite file and counts it (the counts are reported), `"error"` refuses it
with the file name and the fix (`BadAudioPolicy`).
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .configuration_matpac import SAMPLING_RATE


logger = logging.getLogger(__name__)

SOUNDFILE_AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au")
# Containers only FFmpeg (through torchcodec) decodes here.
FFMPEG_AUDIO_EXTENSIONS = (".m4a", ".aac", ".mp4", ".webm")
AUDIO_FILE_EXTENSIONS = SOUNDFILE_AUDIO_EXTENSIONS + FFMPEG_AUDIO_EXTENSIONS
FFMPEG_INSTALL_HINT = (
    "pip install torchcodec (for torch 2.13 CPU: torchcodec==0.13.0) and FFmpeg's shared libraries (Debian 12: "
    "apt-get install libavcodec59 libavformat59 libavutil57 libswresample4 libavdevice59 libavfilter8 libswscale6)"
)
BAD_AUDIO_POLICIES = ("skip", "error")
MIN_CLIP_POLICIES = ("drop", "pad")


class AudioDecodeError(ValueError):
    """An audio value cannot be decoded: unreadable, empty, truncated or holding non-finite samples. The message starts
    with the file name (or `<bytes>`)."""


# ----------------------------------------------------------------------------------------------------------------
# The bad-file policy
# ----------------------------------------------------------------------------------------------------------------


def check_bad_audio_policy(bad_audio: str) -> str:
    if bad_audio not in BAD_AUDIO_POLICIES:
        raise ValueError(f"bad_audio must be one of {BAD_AUDIO_POLICIES}, got {bad_audio!r}.")
    return bad_audio


def check_min_clip_policy(min_clip_policy: str) -> str:
    if min_clip_policy not in MIN_CLIP_POLICIES:
        raise ValueError(f"min_clip_policy must be one of {MIN_CLIP_POLICIES}, got {min_clip_policy!r}.")
    return min_clip_policy


class BadAudioPolicy:
    """Applies `bad_audio` to the decode errors of one run's clips and counts the skipped ones.

    `handle(error)` raises (policy `"error"`: an `AudioDecodeError` naming the file and the fix) or counts (policy
    `"skip"`). A skipped file is logged once per policy, the first time it is met (the first `max_logged` files, then
    one in 1000 new ones): a policy that lives for the whole run (an epoch loop, a resumed stream) reports each
    unreadable file once, and `summary()` gives the count at the end. `num_skipped` counts every skip (a file met in
    each of 3 epochs counts 3), `num_files` the distinct files, `skipped_names` the first `max_logged` of them.

    With `collect=True` the `"error"` policy does not stop at the first bad file: `handle` records it, and
    `raise_collected()` (called once every file was tried) raises one error naming every bad file found (the first
    `max_logged`, and how many in all). With `log=False` skips are counted, never logged (a stream's later epochs,
    whose unreadable files its first epoch reported).
    """

    max_logged = 20

    def __init__(
        self, bad_audio: str = "error", what: str = "clip", scope: str = "so far", collect: bool = False, log=True
    ):
        self.bad_audio = check_bad_audio_policy(bad_audio)
        self.log = log
        self.what = what
        self.scope = scope
        self.collect = collect
        self.num_skipped = 0
        self.skipped_names: list[str] = []
        self.errors: list[str] = []
        self._seen: set[str] = set()

    @property
    def num_files(self) -> int:
        return len(self._seen)

    def handle(self, error: AudioDecodeError):
        name = str(error).split(": ", 1)[0]
        if self.bad_audio == "error":
            if not self.collect:
                raise AudioDecodeError(
                    f"Cannot decode {self.what} {str(error).rstrip('.')}. Fix or remove the file, or skip such files "
                    "and count them with --bad_audio skip (bad_audio='skip')."
                ) from error
            self.errors.append(str(error).rstrip("."))
            return
        self.num_skipped += 1
        if name in self._seen:
            return
        self._seen.add(name)
        if len(self._seen) <= self.max_logged:
            self.skipped_names.append(name)
        if self.log and (len(self._seen) <= self.max_logged or len(self._seen) % 1000 == 0):
            logger.warning(
                "Skipping unreadable %s (%d distinct file(s) %s; each is reported once per run, later epochs count it "
                "in 'clips skipped'): %s",
                self.what,
                len(self._seen),
                self.scope,
                error,
            )

    def raise_collected(self):
        """With `collect=True`: raises one `AudioDecodeError` listing the bad files recorded by `handle`, if any."""
        if not self.errors:
            return
        shown = self.errors[: self.max_logged]
        more = f"\n  ... and {len(self.errors) - len(shown)} more" if len(self.errors) > len(shown) else ""
        raise AudioDecodeError(
            f"Cannot decode {len(self.errors)} {self.what}(s):\n  " + "\n  ".join(shown) + more + "\nFix or remove "
            "these files, or skip such files and count them with --bad_audio skip (bad_audio='skip')."
        )

    def summary(self) -> str:
        if not self.num_skipped:
            return f"no unreadable {self.what} skipped"
        more = " ..." if self.num_files > len(self.skipped_names) else ""
        times = f" ({self.num_skipped} skips in all)" if self.num_skipped != self.num_files else ""
        return f"{self.num_files} unreadable {self.what}(s) skipped{times}: {', '.join(self.skipped_names)}{more}"


# ----------------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------------


def list_audio_files(folder: str | os.PathLike) -> list[Path]:
    """Every file under `folder` (recursively) whose extension is in `AUDIO_FILE_EXTENSIONS`, sorted. Files only
    FFmpeg decodes are listed too; when torchcodec cannot be loaded, their number and first names are logged once with
    the install that fixes it (decoding them then fails, and the bad-file policy counts or refuses them)."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{str(folder)!r} is not a directory.")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_FILE_EXTENSIONS and p.is_file())
    needs_ffmpeg = [p for p in files if p.suffix.lower() in FFMPEG_AUDIO_EXTENSIONS]
    if needs_ffmpeg and torchcodec_error() is not None:
        shown = ", ".join(str(p.relative_to(root)) for p in needs_ffmpeg[:10])
        logger.warning(
            "%d of the %d audio files under %s are containers soundfile cannot read (%s%s) and torchcodec is not "
            "usable (%s): they will count as unreadable. To decode them: %s.",
            len(needs_ffmpeg),
            len(files),
            root,
            shown,
            " ..." if len(needs_ffmpeg) > 10 else "",
            torchcodec_error(),
            FFMPEG_INSTALL_HINT,
        )
    return files


@functools.lru_cache(maxsize=1)
def torchcodec_error() -> str | None:
    """`None` when torchcodec's audio decoder loads (with FFmpeg's shared libraries), else why it does not."""
    try:
        from torchcodec.decoders import AudioDecoder  # noqa: F401
    except ImportError as error:
        return f"torchcodec is not installed ({error})" if "torchcodec" in str(error) else str(error)
    except (OSError, RuntimeError) as error:  # torchcodec installed, FFmpeg's shared libraries missing
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"torchcodec cannot load FFmpeg's libraries ({first_line})"
    return None


def ffmpeg_may_read(soundfile_error: Exception, name: str) -> bool:
    """Whether a file soundfile refused (`soundfile_error`) goes to FFmpeg: libsndfile's own errors only, and, when
    torchcodec is not usable, only for names whose extension libsndfile does not read (or opus, which may sit in an mp4
    container), so that a corrupted .flac keeps its own error message."""
    import soundfile as sf

    if not isinstance(soundfile_error, sf.LibsndfileError):
        return False
    if torchcodec_error() is None:
        return True
    suffix = Path(name).suffix.lower() if not name.startswith("<") else ""
    return suffix == ".opus" or suffix not in SOUNDFILE_AUDIO_EXTENSIONS


def decode_with_ffmpeg(audio: Any, name: str, soundfile_error: Exception) -> tuple[np.ndarray, int]:
    """`(samples, channels)` float32 and the sampling rate of a path or file bytes soundfile could not read
    (`soundfile_error`), decoded by FFmpeg through torchcodec.

    Raises:
        AudioDecodeError: torchcodec is not usable (naming the install that fixes it), or FFmpeg cannot decode it.
    """
    reason = torchcodec_error()
    if reason is not None:
        raise AudioDecodeError(
            f"{name}: soundfile cannot read it ({soundfile_error}) and {reason}. If it is a container only FFmpeg "
            f"reads ({', '.join(FFMPEG_AUDIO_EXTENSIONS)}, opus in mp4), install: {FFMPEG_INSTALL_HINT}"
        )
    from torchcodec.decoders import AudioDecoder

    if isinstance(audio, dict):
        audio = audio.get("bytes") or audio.get("path")
    if isinstance(audio, os.PathLike):
        audio = os.fspath(audio)
    if isinstance(audio, (bytearray, memoryview)):
        audio = bytes(audio)
    try:
        samples = AudioDecoder(audio).get_all_samples()
    except Exception as error:  # FFmpeg's errors come as RuntimeError / ValueError
        raise AudioDecodeError(f"{name}: neither soundfile nor FFmpeg can decode it ({error})") from error
    return samples.data.numpy().T, int(samples.sample_rate)


def audio_source(audio: Any) -> tuple[Any, str]:
    """What soundfile should open for one raw audio value (path / PathLike / bytes / `{"bytes", "path"}`), and a
    readable name for it (for messages and ids)."""
    if isinstance(audio, dict):
        data, path = audio.get("bytes"), audio.get("path")
        if data:
            return io.BytesIO(data), path or "<bytes>"
        audio = path
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(audio)), "<bytes>"
    if isinstance(audio, os.PathLike):
        audio = os.fspath(audio)
    if isinstance(audio, str) and audio:
        if os.path.exists(audio):
            return audio, audio
        if audio.startswith(("http://", "https://")):
            raise AudioDecodeError(f"{audio}: a URL; download the file first and pass its local path")
        if "://" in audio:  # a remote path of a streaming dataset (hf://, s3://, ...)
            from datasets.utils.file_utils import xopen

            return xopen(audio, "rb"), audio
        raise AudioDecodeError(f"{audio}: the file does not exist")
    raise AudioDecodeError(f"<{type(audio).__name__}>: no audio bytes nor path in this value")


def audio_name(audio: Any) -> str:
    """A readable name of one audio value for messages, opening nothing: its path, else `<array>` / `<bytes>`."""
    if isinstance(audio, dict):
        if audio.get("path"):
            return str(audio["path"])
        return "<array>" if audio.get("array") is not None else "<bytes>"
    if isinstance(audio, (str, os.PathLike)):
        return os.fspath(audio)
    return "<bytes>" if isinstance(audio, (bytes, bytearray, memoryview)) else f"<{type(audio).__name__}>"


def to_mono(frames: np.ndarray) -> np.ndarray:
    """`(samples, channels)` (or `(samples,)`) -> `(samples,)` float32, the mean of the channels.

    Computed as element-wise adds of the channel columns, then one scaling: numpy's `mean(axis=1)` reduces along the
    short, strided axis (~30x slower), and a matrix-vector product goes through BLAS, whose threads cost more than the
    sum itself on a busy machine. For two channels the result is bitwise `0.5 * a + 0.5 * b`."""
    if frames.ndim == 1:
        return np.ascontiguousarray(frames, dtype=np.float32)
    num_channels = frames.shape[1]
    if num_channels == 1:
        return np.array(frames[:, 0], dtype=np.float32)
    mono = np.add(frames[:, 0], frames[:, 1], dtype=np.float32)
    for channel in range(2, num_channels):
        np.add(mono, frames[:, channel], out=mono, casting="unsafe")
    mono *= np.float32(1.0 / num_channels)
    return mono


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int = SAMPLING_RATE) -> np.ndarray:
    """Mono float32 `waveform` from `orig_sr` to `target_sr` Hz (soxr, "HQ" quality); unchanged when equal."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 1:
        raise ValueError(f"Audio must be 1-D (mono) to be resampled, got shape {waveform.shape}.")
    if int(orig_sr) == int(target_sr):
        return waveform
    import soxr

    return soxr.resample(waveform, int(orig_sr), int(target_sr), quality="HQ").astype(np.float32, copy=False)


def resampled_length(num_samples: int, orig_sr: int, target_sr: int = SAMPLING_RATE) -> int:
    """Length soxr gives when resampling `num_samples` samples from `orig_sr` to `target_sr` (rounded)."""
    if orig_sr == target_sr:
        return num_samples
    return int(math.floor(num_samples * target_sr / orig_sr + 0.5))


def decode_audio(audio: Any, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Decodes a whole clip to a mono float32 waveform at `sampling_rate`.

    Args:
        audio: a file path (str or PathLike), the bytes of a file, `{"bytes", "path"}` (an `Audio(decode=False)`
            value), `{"array", "sampling_rate"}` (datasets' decoded form: `(samples,)`, or 2-D with channels along the
            shorter axis; integer PCM is scaled to [-1, 1) as the feature extractor does), or a torchcodec
            `AudioDecoder` (what `datasets` >= 4 gives for a decoded `Audio` column).

    Raises:
        AudioDecodeError: the value cannot be decoded, holds no samples or non-finite ones.
    """
    if isinstance(audio, dict) and audio.get("array") is not None:
        if "sampling_rate" not in audio:
            raise AudioDecodeError(f"{audio.get('path') or '<array>'}: an 'array' without its 'sampling_rate'")
        name, waveform, orig_sr = audio.get("path") or "<array>", np.asarray(audio["array"]), audio["sampling_rate"]
        if waveform.ndim == 2 and waveform.shape[0] < waveform.shape[1]:  # (channels, samples), as datasets gives
            waveform = waveform.T
        if waveform.dtype.kind in "iu":  # integer PCM -> [-1, 1), the feature extractor's rule (int16 / 32768)
            half_range = float(2 ** (8 * waveform.dtype.itemsize - 1))
            waveform = (waveform.astype(np.float64) - (half_range if waveform.dtype.kind == "u" else 0.0)) / half_range
    elif hasattr(audio, "get_all_samples"):  # torchcodec.decoders.AudioDecoder
        samples = audio.get_all_samples()
        name, waveform, orig_sr = "<AudioDecoder>", samples.data.numpy().T, samples.sample_rate
    else:
        import soundfile as sf

        source, name = audio_source(audio)
        try:
            waveform, orig_sr = sf.read(source, dtype="float32", always_2d=True)
        except Exception as error:  # libsndfile raises several types; all mean "unreadable"
            if not ffmpeg_may_read(error, name):
                raise AudioDecodeError(f"{name}: {type(error).__name__}: {error}") from error
            waveform, orig_sr = decode_with_ffmpeg(audio, name, error)
    if waveform.shape[0] == 0:
        raise AudioDecodeError(f"{name}: the file holds no samples")
    mono = resample(to_mono(waveform), orig_sr, sampling_rate)
    if not np.isfinite(mono).all():
        raise AudioDecodeError(f"{name}: non-finite samples (NaN or inf)")
    return mono


def decode_audio_column(
    column: str = "audio", sampling_rate: int = SAMPLING_RATE, bad_audio: str = "error"
) -> DecodeAudioColumn:
    """A `datasets` batch transform that decodes `column` (an `Audio(decode=False)` column: `{"bytes", "path"}`, or
    plain paths) into datasets' decoded form `{"array": float32 mono, "sampling_rate", "path"}`:

    ```python
    decode = decode_audio_column("audio")
    dataset = dataset.cast_column("audio", Audio(decode=False))
    dataset.with_transform(decode)  # decode on access
    dataset.map(decode, batched=True, features=decode.features(dataset.features))  # or once, stored
    ```

    `features=` is needed by `map` when the column is an `Audio` column: `datasets` would otherwise store the decoded
    arrays with the `Audio` feature again, which encodes them (and needs torchcodec). A batch without `column` passes
    through unchanged (a later `map` that removed the column, while the transform stays set).

    With `bad_audio="skip"` the rows whose audio cannot be decoded are removed from the batch (every column) and
    counted in the transform's `policy.num_skipped` (in this process); with `"error"` they are refused with the file
    name and the fix. Under `with_transform`, a skipped row makes the batch shorter than the indices asked for: filter
    first (`map` with `"skip"`) when the dataset is indexed one row at a time.
    """
    return DecodeAudioColumn(column, sampling_rate, bad_audio)


class DecodeAudioColumn:
    """The callable made by `decode_audio_column` (see there)."""

    def __init__(self, column: str = "audio", sampling_rate: int = SAMPLING_RATE, bad_audio: str = "error"):
        self.column = column
        self.sampling_rate = sampling_rate
        self.policy = BadAudioPolicy(bad_audio)

    def features(self, features):
        """`features` (a dataset's `datasets.Features`) with `column` as the decoded struct this transform writes."""
        from datasets import Features, List, Value

        decoded = {"array": List(Value("float32")), "sampling_rate": Value("int64"), "path": Value("string")}
        return Features({**features, self.column: decoded})

    def __call__(self, batch: dict) -> dict:
        if self.column not in batch:
            return batch
        keep, decoded = [], []
        for index, value in enumerate(batch[self.column]):
            try:
                array = decode_audio(value, self.sampling_rate)
            except AudioDecodeError as error:
                self.policy.handle(error)
                continue
            path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
            keep.append(index)
            decoded.append({"array": array, "sampling_rate": self.sampling_rate, "path": path})
        if len(keep) == len(batch[self.column]):
            return {**batch, self.column: decoded}
        return {**{k: [v[i] for i in keep] for k, v in batch.items()}, self.column: decoded}


def keep_audio_undecoded(dataset, audio_column: str):
    """Casts `audio_column` of a `datasets` dataset so that it yields the raw `{"bytes", "path"}` (or path / bytes),
    never decoded audio.

    `Audio(decode=False)` is the documented way. In `datasets` >= 4, however, *encoding* an `Audio` value (which the
    python-generator builders such as `audiofolder` and `webdataset` do for every example) imports `torchcodec`; when
    it is not installed, those builders' raw values (a path string, bytes or a dict) are passed through untouched by
    declaring the column as `Value("binary")` instead. Arrow-backed builders (parquet, Hub datasets converted to
    parquet) never encode, so `Audio(decode=False)` works for them.
    """
    from datasets import Audio, Value

    undecoded = dataset.cast_column(audio_column, Audio(decode=False))
    try:
        import datasets.config

        if datasets.config.TORCHCODEC_AVAILABLE:
            return undecoded
    except (ImportError, AttributeError):
        pass
    try:
        next(iter(undecoded.take(1)))
        return undecoded
    except StopIteration:
        return undecoded
    except ImportError as error:
        if "torchcodec" not in str(error):
            raise
        logger.info("torchcodec is not installed: streaming column %r as raw path/bytes", audio_column)
        return dataset.cast_column(audio_column, Value("binary"))


# ----------------------------------------------------------------------------------------------------------------
# Random crops (the pretraining stream decodes only the samples under the crop)
# ----------------------------------------------------------------------------------------------------------------


def clip_key(audio: Any) -> str:
    """A stable identity of a clip: its path, plus a digest of its bytes when it carries bytes."""
    data = audio.get("bytes") if isinstance(audio, dict) else audio if isinstance(audio, (bytes, bytearray)) else None
    path = audio.get("path") if isinstance(audio, dict) else audio if isinstance(audio, str) else None
    if data:
        digest = hashlib.blake2b(bytes(data[:65536]) + len(data).to_bytes(8, "little"), digest_size=8).hexdigest()
        return f"{os.path.basename(path)}#{digest}" if path else digest
    return str(path)


def clip_hash(seed: int, epoch: int, key: str, purpose: str | None = None, num_bytes: int = 8) -> int:
    """The random draws of one clip in one epoch: an integer of `num_bytes` bytes, a pure function of
    `(seed, epoch, key, purpose)`, so that resuming, re-sharding or re-ordering never changes what a clip gets (its crop
    position, `purpose=None`; its augmentation, see `augmentation.py`)."""
    text = f"{seed}:{epoch}:{key}" if purpose is None else f"{seed}:{epoch}:{key}:{purpose}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=num_bytes).digest(), "little")


def crop_offset(num_samples: int, crop_samples: int, seed: int, epoch: int, key: str) -> int:
    """Start of the random crop for one clip: uniform over `[0, num_samples - crop_samples]`, a pure function of
    `(seed, epoch, key)` ([`clip_hash`])."""
    num_positions = num_samples - crop_samples + 1
    if num_positions <= 1:
        return 0
    return clip_hash(seed, epoch, key) % num_positions


# Source samples decoded on each side of a crop before resampling, so that the resampling filter's edge effects fall
# outside the crop (soxr "HQ" has a support of a few dozen samples at these rates).
_RESAMPLE_MARGIN_SECONDS = 0.01


def decode_random_crop(
    audio: Any,
    crop_samples: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    key: str | None = None,
    min_clip_policy: str = "drop",
    sampling_rate: int = SAMPLING_RATE,
) -> tuple[np.ndarray | None, int]:
    """Decodes one random `crop_samples` crop of a clip, as mono float32 at `sampling_rate`.

    Only the samples under the crop (plus a small margin for the resampling filter) are decoded and resampled; the
    result equals cropping the fully decoded and resampled clip up to the filter's rounding (well below 1e-3). The crop
    position is `crop_offset(num_samples, crop_samples, seed, epoch, key)`.

    Returns:
        `(crop, num_valid_samples)`: `crop` is `None` (and `num_valid_samples` 0) when the clip is shorter than the
        crop and `min_clip_policy="drop"`; with `"pad"` a shorter clip is zero-padded at the end and
        `num_valid_samples` (< `crop_samples`) says how many samples are real. A full crop has
        `num_valid_samples == crop_samples`.

    Raises:
        AudioDecodeError: the clip cannot be read, is empty, truncated or holds non-finite samples.
    """
    import soundfile as sf

    check_min_clip_policy(min_clip_policy)
    key = clip_key(audio) if key is None else key
    source, name = audio_source(audio)
    try:
        with sf.SoundFile(source) as sound_file:
            orig_sr, num_frames = sound_file.samplerate, sound_file.frames
            num_samples = resampled_length(num_frames, orig_sr, sampling_rate)
            if num_frames <= 0:
                raise AudioDecodeError(f"{name}: the file holds no samples")
            if num_samples < crop_samples:
                if min_clip_policy == "drop":
                    return None, 0
                segment = sound_file.read(dtype="float32", always_2d=True)
                offset, first_output_sample = 0, 0
            elif orig_sr == sampling_rate:
                offset = crop_offset(num_samples, crop_samples, seed, epoch, key)
                sound_file.seek(offset)
                segment = sound_file.read(crop_samples, dtype="float32", always_2d=True)
                first_output_sample = offset
            else:
                offset = crop_offset(num_samples, crop_samples, seed, epoch, key)
                # Align the segment start on a sample shared by both rates so the crop lands on the same output grid
                # as a resampling of the whole clip (44.1 kHz -> 16 kHz: every 441 input = 160 output samples).
                step = orig_sr // math.gcd(orig_sr, sampling_rate)
                margin = int(_RESAMPLE_MARGIN_SECONDS * orig_sr)
                segment_start = max(0, int(offset * orig_sr / sampling_rate) - margin) // step * step
                segment_stop = int(math.ceil((offset + crop_samples) * orig_sr / sampling_rate)) + margin
                segment_stop = min(num_frames, segment_stop)
                sound_file.seek(segment_start)
                segment = sound_file.read(segment_stop - segment_start, dtype="float32", always_2d=True)
                first_output_sample = segment_start * sampling_rate // orig_sr
    except AudioDecodeError:
        raise
    except Exception as error:  # libsndfile raises several types; all mean "unreadable"
        if not ffmpeg_may_read(error, name):
            raise AudioDecodeError(f"{name}: {type(error).__name__}: {error}") from error
        # a container only FFmpeg reads: decoded whole, then the same crop
        waveform = decode_audio(audio, sampling_rate)
        return crop_decoded(waveform, crop_samples, seed=seed, epoch=epoch, key=key, min_clip_policy=min_clip_policy)
    if segment.shape[0] == 0:
        raise AudioDecodeError(f"{name}: the file holds no samples")
    mono = resample(to_mono(segment), orig_sr, sampling_rate)
    local = offset - first_output_sample
    crop = mono[local : local + crop_samples]
    num_valid = crop.shape[0]
    if num_valid < crop_samples:
        if num_samples >= crop_samples:
            if crop_samples - num_valid > 2:
                raise AudioDecodeError(
                    f"{name}: the file declares {num_frames} frames but only {segment.shape[0]} could be read "
                    "(truncated?)"
                )
            num_valid = crop_samples  # a resampling rounding of 1-2 samples at the very end: counted as full
        crop = np.pad(crop, (0, crop_samples - crop.shape[0]))
    crop = np.ascontiguousarray(crop, dtype=np.float32)
    if not np.isfinite(crop).all():
        raise AudioDecodeError(f"{name}: non-finite samples (NaN or inf)")
    return crop, num_valid


def pcm_to_float32(samples):
    """Samples (a numpy array or a torch tensor, on any device) as float32 in [-1, 1): float input as float32, 16-bit
    integer PCM scaled by 2**-15 (what libsndfile returns for a 16-bit file read as float32, so the values are bitwise
    those of decoding the file)."""
    if isinstance(samples, np.ndarray):
        if samples.dtype == np.int16:
            return samples.astype(np.float32) * np.float32(2.0**-15)
        if samples.dtype.kind != "f":
            raise ValueError(f"Stored audio must be int16 PCM or float, got {samples.dtype}.")
        return np.ascontiguousarray(samples, dtype=np.float32)
    import torch

    if samples.dtype == torch.int16:
        return samples.float().mul_(2.0**-15)
    if not samples.is_floating_point():
        raise ValueError(f"Stored audio must be int16 PCM or float, got {samples.dtype}.")
    return samples.float()


def crop_decoded(
    waveform: np.ndarray,
    crop_samples: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    key: str,
    min_clip_policy: str = "drop",
    keep_int16: bool = False,
) -> tuple[np.ndarray | None, int]:
    """The crop `decode_random_crop` takes, from a clip already decoded to mono at the target rate (`decode_audio`,
    or the int16 / float32 samples of a prepared corpus, see `matpac_hf.prepare_corpus`): the same position, the same
    short-clip rule and the same return value (a float32 crop; integer samples are converted after the slicing, by
    `pcm_to_float32`, unless `keep_int16`: then int16 samples stay int16, for `pcm_to_float32` later). For a clip
    stored at the target rate the crop is bitwise the one `decode_random_crop` reads from the file; for a resampled
    clip it differs by the resampling filter's rounding only (the whole clip resampled once instead of the samples
    around the crop)."""
    check_min_clip_policy(min_clip_policy)
    convert = (lambda samples: samples) if keep_int16 and waveform.dtype == np.int16 else pcm_to_float32
    num_samples = waveform.shape[0]
    if num_samples < crop_samples:
        if min_clip_policy == "drop":
            return None, 0
        crop, num_valid = np.pad(convert(waveform), (0, crop_samples - num_samples)), num_samples
    else:
        offset = crop_offset(num_samples, crop_samples, seed, epoch, key)
        crop, num_valid = convert(waveform[offset : offset + crop_samples]), crop_samples
    if waveform.dtype.kind == "f" and not np.isfinite(crop).all():
        raise AudioDecodeError(f"{key}: non-finite samples (NaN or inf)")
    return crop, num_valid


__all__ = [
    "AUDIO_FILE_EXTENSIONS",
    "AudioDecodeError",
    "FFMPEG_AUDIO_EXTENSIONS",
    "FFMPEG_INSTALL_HINT",
    "SOUNDFILE_AUDIO_EXTENSIONS",
    "BAD_AUDIO_POLICIES",
    "BadAudioPolicy",
    "DecodeAudioColumn",
    "MIN_CLIP_POLICIES",
    "audio_name",
    "audio_source",
    "check_bad_audio_policy",
    "clip_hash",
    "check_min_clip_policy",
    "clip_key",
    "crop_decoded",
    "crop_offset",
    "decode_audio",
    "decode_audio_column",
    "decode_random_crop",
    "decode_with_ffmpeg",
    "ffmpeg_may_read",
    "keep_audio_undecoded",
    "list_audio_files",
    "pcm_to_float32",
    "resample",
    "resampled_length",
    "to_mono",
    "torchcodec_error",
]
