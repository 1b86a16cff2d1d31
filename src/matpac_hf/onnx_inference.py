# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The opt-in fast CPU path: the encoder core exported to ONNX, quantised to int8, run with onnxruntime.

[`MatpacModel`] encodes every clip as consecutive `max_frames` chunks, grouped into micro-batches of chunks of one
length; per micro-batch it runs one step, [`MatpacModel._encode_chunks`] (patch embedding, CLS, positions, the
transformer blocks and the final LayerNorm). That step is what this module exports, with a dynamic number of chunks
and a dynamic chunk length (`16 * t` frames, `t` from 1 to `max_time_patches`), so one file serves every micro-batch.
[`OnnxMatpacModel`] is a [`MatpacModel`] whose `_encode_chunks` runs that file with onnxruntime: input checks, chunk
planning, gathering, placing and pooling are MatpacModel's own, so it returns the same [`MatpacModelOutput`]
(`last_hidden_state`, `pooler_output`, `frame_mask`) for the same inputs, `attention_mask` included.

    from matpac_hf.onnx_inference import OnnxMatpacModel

    fast = OnnxMatpacModel.from_pretrained("matpac-plus-vitb")  # exports once into matpac-plus-vitb/onnx/
    out = fast(**feature_extractor(clips, sampling_rate=16000, return_tensors="pt"))

int8 ([`quantize_onnx_int8`]): `onnxruntime.quantization.quantize_dynamic`, int8 weights per tensor for every
MatMul with constant weights (the linear layers, ~95 % of the FLOPs), activations quantised on the fly; patch
embedding, LayerNorm, attention products, softmax and GELU stay fp32. The files are cached with a fingerprint of the
weights and encoder config inside the ONNX metadata, so they are exported once and re-exported only when the weights
change. Needs `pip install "matpac-hf[onnx]"` (onnx, onnxscript for `torch.onnx.export`, onnxruntime).
"""

import contextlib
import hashlib
import importlib
import json
import logging
import os
import time
import uuid
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers.utils import logging as hf_logging

from .modeling_matpac import MatpacEncoderOutput, MatpacModel


logger = hf_logging.get_logger(__name__)

INSTALL_HINT = 'pip install "matpac-hf[onnx]"'
# Bump when the exported graph or its metadata change: cached files of another version are exported again.
EXPORT_FORMAT_VERSION = 1
ONNX_SUBFOLDER = "onnx"  # next to the weights of a saved model folder
FP32_FILE_NAME = "encoder.onnx"
INT8_FILE_NAME = "encoder_int8.onnx"
INPUT_NAME = "chunk_values"  # (num_chunks, 16 * time_patches, num_mel_bins) float32
OUTPUT_NAME = "last_hidden_state"  # (num_chunks, 1 + F * time_patches, hidden_size) float32
FINGERPRINT_KEY = "matpac_hf.fingerprint"
PRECISION_KEY = "matpac_hf.precision"
# The config fields the encoder core depends on (the rest: front end, pretraining, heads).
ENCODER_CONFIG_KEYS = (
    "num_mel_bins",
    "patch_size",
    "max_frames",
    "num_channels",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "qkv_bias",
    "layer_norm_eps",
)


def _require(module_name: str, purpose: str):
    """`importlib.import_module(module_name)`, or an ImportError that names the extra to install."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs `{module_name}`, which is not installed. Install the ONNX extra: {INSTALL_HINT} "
            "(onnx, onnxscript and onnxruntime)."
        ) from error


# ----------------------------------------------------------------------------------------------------------------------
# Export and quantisation
# ----------------------------------------------------------------------------------------------------------------------


class _EncoderCore(nn.Module):
    """`chunk_values` -> `last_hidden_state` of [`MatpacModel._encode_chunks`]: the graph that is exported."""

    def __init__(self, model: MatpacModel):
        super().__init__()
        self.model = model

    def forward(self, chunk_values: torch.Tensor) -> torch.Tensor:
        return self.model._encode_chunks(chunk_values).last_hidden_state


def _check_exportable(model: MatpacModel):
    if not isinstance(model, MatpacModel) or isinstance(model, OnnxMatpacModel):
        raise TypeError(
            f"Export a torch MatpacModel (e.g. AutoModel.from_pretrained(folder)), got {type(model).__name__}; the "
            "encoder of a head model is its `.matpac` attribute."
        )
    if model.training:
        raise ValueError("The ONNX export is for inference: call model.eval() first.")
    dtypes = {tensor.dtype for tensor in model.state_dict().values() if tensor.is_floating_point()}
    devices = {tensor.device.type for tensor in model.state_dict().values()}
    if dtypes != {torch.float32} or devices != {"cpu"}:
        raise ValueError(
            f"Export a float32 model on the CPU (got dtypes {sorted(map(str, dtypes))} on {sorted(devices)}): "
            "call model.float().cpu() first."
        )


def encoder_fingerprint(model: MatpacModel) -> str:
    """sha256 of what the exported graph depends on: the export format version, the encoder config fields and every
    tensor (name, dtype, shape, bytes) of `model.embeddings` and `model.encoder`. Stored in the ONNX metadata; a
    cached file whose fingerprint differs is exported again."""
    digest = hashlib.sha256()
    config = {key: getattr(model.config, key) for key in ENCODER_CONFIG_KEYS}
    digest.update(json.dumps({"format": EXPORT_FORMAT_VERSION, "config": config}, sort_keys=True).encode())
    for prefix, module in (("embeddings", model.embeddings), ("encoder", model.encoder)):
        for name, tensor in module.state_dict().items():
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{prefix}.{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_export():
    """Silences the exporter's and quantiser's chatter (torchvision ops it skips, deprecation notices, the
    quantiser's pre-processing suggestion); errors still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir", "")]
    levels = [log.level for log in loggers]
    # onnxruntime.quantization logs through the root logger (`logging.warning`), which would call basicConfig() and
    # leave a handler on the root logger of the user's process: a NullHandler while it runs prevents that.
    placeholder = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(placeholder)
    try:
        for log in loggers:
            log.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeHandler(placeholder)
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def _atomic_path(path: Path) -> Path:
    """A fresh temporary file name in `path`'s folder (same file system: `os.replace` into `path` is atomic, so an
    interrupted export never leaves a truncated cache file). Not created here: the file gets the usual permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def _metadata(onnx_model) -> dict[str, str]:
    """The metadata of an `onnx.ModelProto` as a dict."""
    return {prop.key: prop.value for prop in onnx_model.metadata_props}


def _replace_metadata(onnx_model, props: dict[str, str]) -> None:
    """Replaces the metadata of an `onnx.ModelProto` by `props` (sorted by key)."""
    del onnx_model.metadata_props[:]
    for key, value in sorted(props.items()):
        onnx_model.metadata_props.add(key=key, value=value)


def _set_metadata(onnx_model, fingerprint: str, precision: str, config) -> None:
    """Writes the matpac-hf metadata into an `onnx.ModelProto` (keeping the exporter's own)."""
    matpac = {
        FINGERPRINT_KEY: fingerprint,
        PRECISION_KEY: precision,
        "matpac_hf.max_frames": str(config.max_frames),
        "matpac_hf.patch_size": str(config.patch_size),
    }
    _replace_metadata(onnx_model, {**_metadata(onnx_model), **matpac})


def _read_varint(handle) -> int | None:
    """One protobuf varint from `handle` (None at the end of the file)."""
    value, shift = 0, 0
    while True:
        byte = handle.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7


_METADATA_PROPS_FIELD = 14  # ModelProto.metadata_props (onnx.proto)


def read_fingerprint(path: str | os.PathLike) -> str | None:
    """The fingerprint stored in an ONNX file written by [`export_onnx`] / [`quantize_onnx_int8`] (None if absent).

    Reads only the metadata entries: the top-level fields of the `ModelProto` are walked and the others (the graph
    with its weights, 430 MB for ViT-B) skipped with a seek, instead of parsing the whole file."""
    onnx = _require("onnx", "Reading an ONNX file")
    fixed_sizes = {1: 8, 5: 4}  # protobuf wire types 1 (64-bit) and 5 (32-bit)
    with open(path, "rb") as handle:  # a file that is not an ONNX model has no fingerprint (None)
        while (key := _read_varint(handle)) is not None:
            field, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _read_varint(handle)
            elif wire_type in fixed_sizes:
                handle.seek(fixed_sizes[wire_type], os.SEEK_CUR)
            elif wire_type == 2:
                size = _read_varint(handle)
                if size is None:
                    return None
                if field != _METADATA_PROPS_FIELD:
                    handle.seek(size, os.SEEK_CUR)
                    continue
                entry = onnx.StringStringEntryProto.FromString(handle.read(size))
                if entry.key == FINGERPRINT_KEY:
                    return entry.value
            else:  # not a protobuf file (a damaged cache file, say): no fingerprint, so it gets exported again
                return None
    return None


def export_onnx(model: MatpacModel, path: str | os.PathLike, opset_version: int | None = None) -> Path:
    """Exports the encoder core of `model` ([`MatpacModel._encode_chunks`]) to one fp32 ONNX file at `path`.

    Input `chunk_values` `(num_chunks, 16 * time_patches, num_mel_bins)` float32, output `last_hidden_state`
    `(num_chunks, 1 + F * time_patches, hidden_size)`; both the number of chunks and the chunk length are dynamic
    (`time_patches` from 1 to `config.max_time_patches`). Uses `torch.onnx.export(dynamo=True, optimize=True)`
    (ViT-B: about 15 s on one CPU core). The weights are stored in the file (no external data); the file
    is written atomically and carries [`encoder_fingerprint`] in its metadata. Returns the path.
    """
    return _export_onnx(model, path, encoder_fingerprint(model), opset_version)


def _export_onnx(model: MatpacModel, path: str | os.PathLike, fingerprint: str, opset_version: int | None) -> Path:
    """[`export_onnx`] with the weights' fingerprint already computed (hashing ViT-B's weights takes a while)."""
    _require("onnxscript", "torch.onnx.export")
    onnx = _require("onnx", "The ONNX export")
    _check_exportable(model)
    path = Path(path)
    config = model.config
    max_time_patches = config.max_time_patches
    example = torch.zeros(2, max_time_patches * config.patch_size, config.num_mel_bins)  # 2: no 0/1 specialisation
    num_chunks = torch.export.Dim("num_chunks", min=1)
    dynamic_axes = {0: num_chunks}
    if max_time_patches > 1:
        dynamic_axes[1] = config.patch_size * torch.export.Dim("time_patches", min=1, max=max_time_patches)
    core = _EncoderCore(model)
    core.training = False  # model is in eval mode (checked); the wrapper itself has no layers of its own
    temporary = _atomic_path(path)
    try:
        with _quiet_export(), torch.no_grad():
            kwargs = {} if opset_version is None else {"opset_version": opset_version}
            program = torch.onnx.export(
                core,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"chunk_values": dynamic_axes},
                optimize=True,
                verbose=False,
                **kwargs,
            )
        onnx_model = program.model_proto
        _set_metadata(onnx_model, fingerprint, "fp32", config)
        onnx.save(onnx_model, str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def quantize_onnx_int8(fp32_path: str | os.PathLike, int8_path: str | os.PathLike) -> Path:
    """int8 copy of an fp32 export: `onnxruntime.quantization.quantize_dynamic` with int8 weights (per tensor) on
    every MatMul with a constant weight (the linear layers), activations quantised on the fly (uint8). Keeps the
    fingerprint of the fp32 file; written atomically. Returns `int8_path`."""
    onnx = _require("onnx", "int8 quantisation")
    quantization = _require("onnxruntime.quantization", "int8 quantisation")
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    source = onnx.load(str(fp32_path))
    props = _metadata(source)
    temporary = _atomic_path(int8_path)
    try:
        with _quiet_export():
            quantization.quantize_dynamic(
                source,
                str(temporary),
                op_types_to_quantize=["MatMul"],
                weight_type=quantization.QuantType.QInt8,
                per_channel=False,
                extra_options={"MatMulConstBOnly": True},
            )
        quantized = onnx.load(str(temporary))
        _replace_metadata(quantized, {**props, PRECISION_KEY: "int8"})
        onnx.save(quantized, str(temporary))
        os.replace(temporary, int8_path)
    finally:
        temporary.unlink(missing_ok=True)
    return int8_path


def ensure_onnx_export(model: MatpacModel, onnx_dir: str | os.PathLike, int8: bool = True) -> Path:
    """The cached ONNX file for `model` in `onnx_dir` (`encoder_int8.onnx` or `encoder.onnx`), exported (and
    quantised) only when missing or made from other weights / config (fingerprint mismatch). Prints nothing when the
    cache is valid; logs the export and quantisation times otherwise. Returns the file to run."""
    _check_exportable(model)
    onnx_dir = Path(onnx_dir)
    fingerprint = encoder_fingerprint(model)
    fp32_path, int8_path = onnx_dir / FP32_FILE_NAME, onnx_dir / INT8_FILE_NAME
    target = int8_path if int8 else fp32_path
    if target.is_file() and read_fingerprint(target) == fingerprint:
        return target
    if target.is_file():
        logger.warning(f"{target} was exported from other weights or another config: exporting again.")
    try:
        onnx_dir.mkdir(parents=True, exist_ok=True)
        writable = os.access(onnx_dir, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        raise PermissionError(
            f"Cannot write the ONNX export into {onnx_dir}: pass onnx_dir= a writable folder (the export is cached "
            "there and reused)."
        )
    if not (fp32_path.is_file() and read_fingerprint(fp32_path) == fingerprint):
        logger.warning(
            f"Exporting the MATPAC encoder to ONNX ({fp32_path}), once: the file is reused by later calls (ViT-B: "
            "about 13 s of CPU time on one core, int8 included, plus writing 430 MB)."
        )
        start = time.perf_counter()
        _export_onnx(model, fp32_path, fingerprint, opset_version=None)
        logger.info(f"ONNX export: {time.perf_counter() - start:.1f} s")
    if int8:
        start = time.perf_counter()
        quantize_onnx_int8(fp32_path, int8_path)
        logger.info(f"int8 quantisation ({int8_path}): {time.perf_counter() - start:.1f} s")
    return target


# ----------------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------------


def create_session(path: str | os.PathLike, num_threads: int | None = None, allow_spinning: bool = False):
    """An onnxruntime CPU `InferenceSession` on `path`: `intra_op_num_threads = num_threads` (default
    `torch.get_num_threads()`, so the ONNX path uses the threads torch would), one inter-op thread, sequential
    execution, all graph optimisations.

    `allow_spinning=False` (`session.intra_op.allow_spinning = 0`): onnxruntime's worker threads block as soon as a
    run ends instead of busy-waiting for the next one (its default), so they take no CPU from torch (or anything else
    in the process) between runs; see benchmarks/bench_onnx_coexistence.py."""
    ort = _require("onnxruntime", "The ONNX runner")
    num_threads = torch.get_num_threads() if num_threads is None else int(num_threads)
    if num_threads < 1:
        raise ValueError(f"num_threads must be a positive number of threads, got {num_threads}; None: torch's.")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "1" if allow_spinning else "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxMatpacModel(MatpacModel):
    """A [`MatpacModel`] whose encoder core runs with onnxruntime (int8 by default): same inputs, same
    [`MatpacModelOutput`] (`last_hidden_state`, `pooler_output`, `frame_mask`; not `hidden_states` / `attentions`,
    which the exported graph does not return), CPU only, inference only.

    Build it with [`OnnxMatpacModel.from_pretrained`] (a saved folder: the export is cached in `<folder>/onnx/`) or
    [`OnnxMatpacModel.from_model`] (a loaded model; shares its modules, so no weights are copied). The torch modules
    stay attached (the chunk plan, devices and [`embed_long_audio`] use them); the ONNX file is a snapshot of the
    weights at export time.
    """

    onnx_path: Path | None = None
    num_threads: int | None = None
    # The exported graph's attention holds every chunk's scores, so they count per chunk in the memory budget (ViT-B:
    # 8 full chunks a call; see `benchmarks/RESULTS.md` for the onnxruntime measurements).
    attention_scores_of_every_chunk = True
    packs_chunk_lengths = False  # `_encode_chunks` runs the ONNX graph: one chunk length per call
    session = None

    @classmethod
    def from_model(
        cls,
        model: MatpacModel,
        onnx_dir: str | os.PathLike | None = None,
        int8: bool = True,
        num_threads: int | None = None,
    ) -> "OnnxMatpacModel":
        """The runner for a loaded `model` (eval mode, float32, CPU).

        Args:
            model ([`MatpacModel`]): the encoder to export (a head model's encoder is its `.matpac`).
            onnx_dir (path, *optional*): where the ONNX files are cached (`encoder.onnx`, `encoder_int8.onnx`).
                Default: `<folder>/onnx` when `model` was loaded from a local folder (`model.name_or_path`).
            int8 (`bool`): run the int8 file (default) or the fp32 one (for checks: it is slower than torch).
            num_threads (`int`, *optional*): onnxruntime intra-op threads; default `torch.get_num_threads()`.
        """
        if onnx_dir is None:
            name_or_path = str(getattr(model, "name_or_path", "") or "")  # "" for a model built in memory
            if not (name_or_path and Path(name_or_path).is_dir()):
                raise ValueError(
                    "OnnxMatpacModel needs a folder to cache the ONNX export in: pass onnx_dir=... (e.g. "
                    "'matpac-onnx/'), or load the model from a local folder saved with save_pretrained (the export "
                    "then goes to <folder>/onnx/)."
                )
            onnx_dir = Path(name_or_path) / ONNX_SUBFOLDER
        path = ensure_onnx_export(model, onnx_dir, int8=int8)
        with torch.device("meta"):  # the runner's own modules are replaced by the model's: no weights allocated
            runner = cls(model.config)
        runner.embeddings, runner.encoder = model.embeddings, model.encoder
        runner.name_or_path = getattr(model, "name_or_path", "")
        runner.eval()
        runner.onnx_path = path
        runner.num_threads = torch.get_num_threads() if num_threads is None else num_threads
        runner.session = create_session(path, runner.num_threads)
        return runner

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        onnx_dir: str | os.PathLike | None = None,
        int8: bool = True,
        num_threads: int | None = None,
        **kwargs,
    ) -> "OnnxMatpacModel":
        """`MatpacModel.from_pretrained(...)` (same arguments), then [`OnnxMatpacModel.from_model`]: the export is
        cached in `<folder>/onnx/` for a local folder, or in `onnx_dir`."""
        if onnx_dir is None and not Path(pretrained_model_name_or_path).is_dir():
            raise ValueError(
                f"{pretrained_model_name_or_path!r} is not a local folder: pass onnx_dir=... to cache the ONNX export "
                "in (it is exported once, then reused)."
            )
        model = MatpacModel.from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs).eval()
        return cls.from_model(model, onnx_dir=onnx_dir, int8=int8, num_threads=num_threads)

    def save_pretrained(self, *args, **kwargs):
        raise NotImplementedError(
            "OnnxMatpacModel is a runner, not a checkpoint: save the torch MatpacModel (MatpacModel.save_pretrained); "
            "OnnxMatpacModel.from_pretrained(folder) then exports into <folder>/onnx/ once and reuses it."
        )

    def _encode_chunks(
        self, chunk_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> MatpacEncoderOutput:
        if output_hidden_states or output_attentions:
            raise ValueError(
                "OnnxMatpacModel returns last_hidden_state, pooler_output and frame_mask only (the ONNX graph ends at "
                "the final LayerNorm): call it without output_hidden_states / output_attentions (and with "
                "config.output_hidden_states / output_attentions False), or use the torch MatpacModel for them."
            )
        if chunk_values.device.type != "cpu":
            raise ValueError(
                f"OnnxMatpacModel runs on the CPU: pass CPU tensors (got {chunk_values.device}); for GPUs use the "
                "torch MatpacModel."
            )
        values = chunk_values.detach().to(torch.float32).contiguous().numpy()
        (tokens,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: values})
        return MatpacEncoderOutput(last_hidden_state=torch.from_numpy(tokens))
