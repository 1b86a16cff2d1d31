# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""The authors' checkpoint layout: recognised from the weights, mapped onto matpac-hf's names.

The official inference module (`inference_matpac`, class `matpac_wrapper`) names its encoder `patch_embed.proj.*`,
`cls_token`, `pos_embed` (the fixed sin-cos table, stored), `student_encoder.blocks.{i}.{norm1, attn.qkv, attn.proj,
norm2, mlp.fc1, mlp.fc2}.*` and `student_encoder.norm.*`; its log-mel front end sits under `log_mel.`; the
AudioSet-fine-tuned model adds `head_norm.*` (BatchNorm1d, no affine) and `head.*`. The release `.pt` files hold that
layout as it is; the authors' Hub repositories (`auriankelen/matpac_*`, trust_remote_code ports of the inference
code) hold it under a wrapper prefix. Both are recognised here by the key layout under any prefix, and every size is
read from the tensor shapes, never from a `config.json` (whose fields belong to the authors' own code):

* [`find_official_layout`]: where the layout sits in a `{name: shape}` listing, or `None`;
* [`sizes_from_shapes`]: the [`MatpacConfig`] sizes (width, depth, MLP size, patch, mel bins, chunk length);
* [`map_encoder`] / [`map_audioset_head`] / [`map_blocks`]: `{official name: our name}`, for the converter and for
  `from_pretrained`;
* [`loading_plan`]: what `from_pretrained` of our classes needs to load such a folder or Hub repository directly:
  the config from the shapes and the tensors under our names, loaded as a `state_dict` (transformers' `key_mapping`
  would also rename, but `save_pretrained` would then write the authors' names back: a converted model must save as
  a matpac-hf folder);
* [`check_encoder_loaded`]: the refusal of a checkpoint that leaves any encoder tensor at random.

This file imports only torch, transformers, safetensors and the configuration: it travels with the model code into
saved folders (remote code).
"""

import json
import re
from dataclasses import dataclass

import torch
from transformers.utils import logging

from .configuration_matpac import NUM_MEL_BINS, MatpacConfig


logger = logging.get_logger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that is not in a layout matpac-hf understands (or does not fit the model it is loaded into)."""


# Official name (inside `student_encoder.blocks.{i}.` / `_ema` `blocks.{i}.`) -> ours (inside `layers.{i}.`).
BLOCK_PARAMETER_NAMES = {
    "norm1": "layernorm_before",
    "attn.qkv": "attention.qkv",
    "attn.proj": "attention.proj",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
BLOCK_KEY = re.compile(
    r"^(?P<prefix>.*?)blocks\.(?P<index>\d+)\."
    r"(?P<module>norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)\.(?P<kind>weight|bias)$"
)
# The two keys that identify the official encoder wherever it sits (`<prefix>` + each).
OFFICIAL_ENCODER_ANCHORS = ("patch_embed.proj.weight", "student_encoder.blocks.0.attn.qkv.weight")
# The official AudioSet head (`<head prefix>` + each).
OFFICIAL_HEAD_ANCHORS = ("head.weight", "head_norm.running_mean")
# Official tensors without a counterpart here: the fixed position table and the log-mel front end's buffers.
FIXED_OR_FRONT_END = re.compile(r"(^|\.)(pos_embed|log_mel\..+)$")
# Our encoder's patch-embedding weight: a matpac-hf folder has it (under "" or "matpac.").
OUR_ENCODER_ANCHOR = "embeddings.patch_embeddings.projection.weight"
NUM_STFT_BINS = 201  # n_fft 400 // 2 + 1: the first dimension of the front end's mel filter bank


def describe_keys(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


# ----------------------------------------------------------------------------------------------------------------------
# Where the layout is
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class OfficialLayout:
    """The official inference layout found in a checkpoint: `prefix` is the wrapper prefix of the encoder (`""` for a
    release file, e.g. `"model."` for a wrapping module), `head_prefix` that of the AudioSet head (`None` without
    one)."""

    prefix: str
    head_prefix: str | None = None


def _prefixes_of(keys, anchors) -> list[str]:
    """Prefixes `p` such that `p + anchor` is a key for every anchor, shortest first."""
    first, *others = anchors
    found = {key[: -len(first)] for key in keys if key.endswith(first)}
    return sorted((p for p in found if all(p + other in keys for other in others)), key=len)


def find_official_layout(keys) -> OfficialLayout | None:
    """The official encoder layout in `keys` (any iterable of names), or `None`. With several candidate prefixes
    (nested wrappers holding two encoders) the shortest is taken only when it is unique."""
    keys = set(keys)
    prefixes = _prefixes_of(keys, OFFICIAL_ENCODER_ANCHORS)
    if not prefixes:
        return None
    if len(prefixes) > 1:
        raise CheckpointError(
            f"The checkpoint holds the official MATPAC encoder layout under several prefixes {prefixes}: more than "
            "one encoder. Convert the one you want with `python -m matpac_hf.convert_original_checkpoint` after "
            "extracting its tensors (without the prefix)."
        )
    heads = _prefixes_of(keys, OFFICIAL_HEAD_ANCHORS)
    if len(heads) > 1:
        raise CheckpointError(f"The checkpoint holds several official AudioSet heads (prefixes {heads}).")
    return OfficialLayout(prefix=prefixes[0], head_prefix=heads[0] if heads else None)


def strip_prefix(shapes: dict, prefix: str) -> dict:
    return {key[len(prefix) :]: value for key, value in shapes.items() if key.startswith(prefix)}


# ----------------------------------------------------------------------------------------------------------------------
# Sizes from shapes
# ----------------------------------------------------------------------------------------------------------------------


def block_indices(state: dict, prefix: str) -> list[int]:
    indices = set()
    for key in state:
        match = BLOCK_KEY.match(key)
        if match and match["prefix"] == prefix:
            indices.add(int(match["index"]))
    return sorted(indices)


def require(state: dict, key: str, what: str):
    """`state[key]` (a tensor, or a shape where only shapes were read), or a `CheckpointError` naming what is
    missing."""
    if key not in state:
        raise CheckpointError(f"The checkpoint has no '{key}' ({what}); it cannot be converted without it.")
    return state[key]


def _shape_of(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def _shape(state: dict, key: str, what: str) -> tuple[int, ...]:
    return _shape_of(require(state, key, what))


def front_end_mel_bins(state: dict) -> int | None:
    """Mel bands of the official front end's filter bank (a `(201, num_mel_bins)` buffer under `log_mel.`), if
    stored."""
    for key, value in state.items():
        shape = _shape_of(value)
        if key.startswith("log_mel.") and len(shape) == 2 and shape[0] == NUM_STFT_BINS:
            return int(shape[1])
    return None


def sizes_from_shapes(
    state: dict,
    num_mel_bins: int | None = None,
    num_attention_heads: int | None = None,
    max_frames: int | None = None,
) -> dict:
    """[`MatpacConfig`] encoder sizes of an official-layout state (names without the wrapper prefix; values are
    tensors or shapes): width, depth, MLP size, qkv bias, patch size and channels from the weights; `num_mel_bins`
    from the front end's filter bank when stored (else the argument, else 80); `max_frames` from the stored position
    table (else the argument, else 608). The head count is not visible in the shapes: `num_attention_heads`, else 12
    for ViT-B's width 768, else a [`CheckpointError`] naming the argument."""
    patch_shape = _shape(state, "patch_embed.proj.weight", "patch embedding")
    if len(patch_shape) != 4 or patch_shape[-1] != patch_shape[-2]:
        raise CheckpointError(
            f"'patch_embed.proj.weight' has shape {patch_shape}; expected a square conv kernel "
            "(hidden, channels, patch, patch)."
        )
    hidden_size, num_channels, patch_size, _ = patch_shape
    if num_attention_heads is None:
        if hidden_size != 768:
            raise CheckpointError(
                f"The encoder is {hidden_size} wide: its head count is not visible in the weights (only ViT-B's "
                "width 768 implies 12 heads). Give it: --num_attention_heads N (converter), or "
                "from_pretrained(..., num_attention_heads=N)."
            )
        num_attention_heads = 12
    if hidden_size % num_attention_heads:
        raise CheckpointError(f"num_attention_heads {num_attention_heads} does not divide the width {hidden_size}.")
    blocks = block_indices(state, "student_encoder.")
    if not blocks:
        raise CheckpointError("The checkpoint has no 'student_encoder.blocks.{i}.*' weights (transformer blocks).")
    if blocks != list(range(len(blocks))):
        raise CheckpointError(f"Student blocks are not numbered 0..N-1: found indices {blocks}.")
    fc1 = _shape(state, "student_encoder.blocks.0.mlp.fc1.weight", "first MLP layer of block 0")
    stored_mel_bins = front_end_mel_bins(state)
    if stored_mel_bins is not None and num_mel_bins is not None and num_mel_bins != stored_mel_bins:
        raise CheckpointError(
            f"num_mel_bins {num_mel_bins} was given, but the checkpoint's front end has {stored_mel_bins} mel bands."
        )
    num_mel_bins = stored_mel_bins or num_mel_bins or NUM_MEL_BINS
    if num_mel_bins % patch_size != 0:
        raise CheckpointError(f"num_mel_bins ({num_mel_bins}) is not a multiple of the patch size ({patch_size}).")
    num_frequency_patches = num_mel_bins // patch_size

    table_frames = None
    if "pos_embed" in state:
        table = _shape(state, "pos_embed", "position table")
        num_positions = table[-2] - 1
        if table[-1] != hidden_size or num_positions % num_frequency_patches != 0:
            raise CheckpointError(
                f"'pos_embed' has shape {table}; expected (1, 1 + {num_frequency_patches} x time_patches, "
                f"{hidden_size}) for {num_mel_bins} mel bins and {patch_size}-pixel patches. If the model uses "
                "another number of mel bins, pass --num_mel_bins."
            )
        table_frames = num_positions // num_frequency_patches * patch_size
    if max_frames is None:
        if table_frames is None:
            logger.warning("No 'pos_embed' in the checkpoint: using max_frames=608 (pass --max_frames to change).")
            max_frames = 608
        else:
            max_frames = table_frames
    elif table_frames is not None and max_frames != table_frames:
        logger.warning(
            "max_frames %d differs from the checkpoint's position table (%d frames): chunks will be %d frames long, "
            "so outputs for inputs longer than %d frames differ from the official code.",
            max_frames,
            table_frames,
            max_frames,
            min(max_frames, table_frames),
        )
    return dict(
        hidden_size=int(hidden_size),
        num_hidden_layers=len(blocks),
        num_attention_heads=int(num_attention_heads),
        intermediate_size=int(fc1[0]),
        qkv_bias="student_encoder.blocks.0.attn.qkv.bias" in state,
        patch_size=int(patch_size),
        num_channels=int(num_channels),
        num_mel_bins=int(num_mel_bins),
        max_frames=int(max_frames),
    )


# ----------------------------------------------------------------------------------------------------------------------
# Name mapping (official name -> ours), shared by the converter and `from_pretrained`
# ----------------------------------------------------------------------------------------------------------------------


def map_blocks(state, official_prefix: str, our_prefix: str, norm: tuple[str, str] = ("norm", "layernorm")):
    """`{official name: our name}` for the transformer blocks `{official_prefix}blocks.{i}.*` (e.g. `student_encoder.`)
    and the final norm `{official_prefix}{norm[0]}.*` -> `{our_prefix}{norm[1]}.*`."""
    mapping = {}
    for key in state:
        match = BLOCK_KEY.match(key)
        if match and match["prefix"] == official_prefix:
            ours = BLOCK_PARAMETER_NAMES[match["module"]]
            mapping[key] = f"{our_prefix}layers.{match['index']}.{ours}.{match['kind']}"
    for kind in ("weight", "bias"):
        if f"{official_prefix}{norm[0]}.{kind}" in state:
            mapping[f"{official_prefix}{norm[0]}.{kind}"] = f"{our_prefix}{norm[1]}.{kind}"
    return mapping


def map_encoder(state, prefix: str = "") -> dict[str, str]:
    """`{official name: our name}` for the student encoder; `prefix` is where [`MatpacModel`] sits in the target."""
    mapping = {
        "patch_embed.proj.weight": f"{prefix}embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": f"{prefix}embeddings.patch_embeddings.projection.bias",
        "cls_token": f"{prefix}embeddings.cls_token",
    }
    mapping = {key: value for key, value in mapping.items() if key in state}
    mapping.update(map_blocks(state, "student_encoder.", f"{prefix}encoder."))
    return mapping


def map_audioset_head(state) -> dict[str, str]:
    """`{official name: our name}` for the AudioSet head of [`MatpacForAudioClassification`] (`"mean"` pooling)."""
    mapping = {
        "head_norm.running_mean": "head_norm.running_mean",
        "head_norm.running_var": "head_norm.running_var",
        "head_norm.num_batches_tracked": "head_norm.num_batches_tracked",
        "head.weight": "classifier.weight",
        "head.bias": "classifier.bias",
    }
    return {key: value for key, value in mapping.items() if key in state}


# ----------------------------------------------------------------------------------------------------------------------
# Reading a folder or Hub repository's weight names and shapes
# ----------------------------------------------------------------------------------------------------------------------

DOWNLOAD_KWARGS = ("cache_dir", "force_download", "proxies", "local_files_only", "token", "revision", "subfolder")


def _cached(name_or_path: str, filename: str, download_kwargs: dict) -> str | None:
    from transformers.utils import cached_file

    return cached_file(
        name_or_path,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **download_kwargs,
    )


def weight_files(name_or_path: str, download_kwargs: dict) -> list[str]:
    """The weight files of a folder or Hub repository (`model.safetensors`, its shards, or `pytorch_model.bin`);
    `[]` when it has none of these. Downloads land in the Hugging Face cache."""
    path = _cached(name_or_path, "model.safetensors", download_kwargs)
    if path:
        return [path]
    index = _cached(name_or_path, "model.safetensors.index.json", download_kwargs)
    if index:
        with open(index, encoding="utf-8") as handle:
            shards = sorted(set(json.load(handle)["weight_map"].values()))
        files = [_cached(name_or_path, shard, download_kwargs) for shard in shards]
        return files if all(files) else []
    path = _cached(name_or_path, "pytorch_model.bin", download_kwargs)
    return [path] if path else []


def checkpoint_shapes(files: list[str]) -> dict[str, tuple[int, ...]]:
    """`{name: shape}` of weight files, from the safetensors headers (a `.bin` is memory-mapped, not copied)."""
    from safetensors import safe_open

    shapes = {}
    for file in files:
        if file.endswith(".safetensors"):
            with safe_open(file, framework="pt") as handle:
                for key in handle.keys():
                    shapes[key] = tuple(handle.get_slice(key).get_shape())
        else:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            shapes.update({key: tuple(value.shape) for key, value in state.items() if isinstance(value, torch.Tensor)})
    return shapes


def read_tensors(files: list[str], names) -> dict[str, torch.Tensor]:
    """The tensors `names` from weight files."""
    from safetensors import safe_open

    names, tensors = set(names), {}
    for file in files:
        if file.endswith(".safetensors"):
            with safe_open(file, framework="pt") as handle:
                tensors.update({key: handle.get_tensor(key) for key in handle.keys() if key in names})
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            tensors.update({key: value for key, value in state.items() if key in names})
    return tensors


def raw_config(name_or_path, download_kwargs: dict) -> dict:
    path = _cached(str(name_or_path), "config.json", download_kwargs)
    if not path:
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _head_count_in(raw_config, hidden_size: int) -> int | None:
    """A head count the authors' `config.json` states (`num_attention_heads` / `num_heads` at any depth), when it
    names one value that divides the width; `None` otherwise."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if (
                    key in ("num_attention_heads", "num_heads")
                    and isinstance(value, int)
                    and not isinstance(value, bool)
                ):
                    found.add(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(raw_config)
    return found.pop() if len(found) == 1 and hidden_size % next(iter(found)) == 0 else None


# ----------------------------------------------------------------------------------------------------------------------
# Loading plan for `from_pretrained`
# ----------------------------------------------------------------------------------------------------------------------

# MatpacConfig fields the weights determine: a value given for them must agree with the weights.
SIZE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "qkv_bias",
    "patch_size",
    "num_channels",
    "num_mel_bins",
)


@dataclass
class LoadingPlan:
    """An official-layout checkpoint made ready for `from_pretrained`: its `config` (sizes from the weights) and its
    tensors under our names (`state_dict`)."""

    layout: OfficialLayout
    config: MatpacConfig
    state_dict: dict[str, torch.Tensor]


def loading_plan(
    class_name: str, name_or_path, kwargs: dict, encoder_prefix: str, loads_audioset_head: bool
) -> LoadingPlan | None:
    """For `<class_name>.from_pretrained(name_or_path, **kwargs)`, a class whose encoder sits under `encoder_prefix`
    (`""` or `"matpac."`) and that has the official AudioSet head's place when `loads_audioset_head`: `None` when the
    checkpoint is not in the official layout (our own folders load as they are), else the plan. The config fields
    among `kwargs` are consumed (removed from it) into the plan's config.

    Sizes: from the shapes ([`sizes_from_shapes`]); the head count from `num_attention_heads=` if given, else from a
    `config` the caller passed, else from the authors' `config.json` when it states one, else ViT-B's 12. A size given
    in `kwargs` or in a passed `config` that the weights contradict is a [`CheckpointError`]. Into
    [`MatpacForAudioClassification`] the official AudioSet head loads as the `"mean"`-pooling head (multi-label, class
    names from the `config.json`'s `id2label` when it has one per output)."""
    download_kwargs = {key: kwargs[key] for key in DOWNLOAD_KWARGS if kwargs.get(key) is not None}
    files = weight_files(str(name_or_path), download_kwargs)
    if not files:
        return None
    shapes = checkpoint_shapes(files)
    if any(key == OUR_ENCODER_ANCHOR or key.endswith("." + OUR_ENCODER_ANCHOR) for key in shapes):
        return None
    layout = find_official_layout(shapes)
    if layout is None:
        return None

    config_fields = set(MatpacConfig().to_dict()) | {"id2label", "label2id", "num_labels"}
    given = {name: kwargs.pop(name) for name in list(kwargs) if name in config_fields}
    passed = kwargs.get("config")
    raw = raw_config(name_or_path, download_kwargs)
    try:  # the authors' config.json fields that share a name with ours (sizes are replaced below)
        baseline = MatpacConfig.from_dict({key: value for key, value in raw.items() if key in config_fields})
    except (TypeError, ValueError) as error:
        logger.info("%s: its config.json does not make a MatpacConfig (%s); using the defaults.", name_or_path, error)
        baseline = MatpacConfig()
    config = MatpacConfig.from_dict(passed.to_dict()) if isinstance(passed, MatpacConfig) else baseline
    if isinstance(passed, MatpacConfig):
        # A config the Auto classes read from this folder's config.json carries `name_or_path`: its size values that
        # differ from what that file gives came from the caller's keyword arguments. A config the caller built states
        # every size itself.
        from_caller = {
            name: getattr(passed, name)
            for name in (*SIZE_FIELDS, "num_attention_heads", "max_frames")
            if not passed.name_or_path or getattr(passed, name) != getattr(baseline, name)
        }
        given = {**from_caller, **given}
    state = strip_prefix(shapes, layout.prefix)
    heads = given.get("num_attention_heads")
    if heads is None:
        heads = _head_count_in(raw, state["patch_embed.proj.weight"][0])
    sizes = sizes_from_shapes(
        state, num_mel_bins=given.get("num_mel_bins"), num_attention_heads=heads, max_frames=given.get("max_frames")
    )
    contradictions = [
        f"{name}={given[name]!r} (the weights say {sizes[name]!r})"
        for name in SIZE_FIELDS
        if name in given and given[name] != sizes[name]
    ]
    if contradictions:
        raise CheckpointError(
            f"{name_or_path} holds the official MATPAC layout, whose sizes are read from the weights; these values "
            f"contradict them: {', '.join(contradictions)}. Leave them out."
        )
    for name, value in {**given, **sizes}.items():
        setattr(config, name, value)

    mapping = {layout.prefix + official: ours for official, ours in map_encoder(state, encoder_prefix).items()}
    with_head = layout.head_prefix is not None and loads_audioset_head
    if with_head:
        head = strip_prefix(shapes, layout.head_prefix)
        if "head_norm.weight" in head:
            raise CheckpointError(
                f"{name_or_path}: the official head's 'head_norm' has affine parameters; MatpacForAudioClassification's "
                "head_norm has none (the official AudioSet head's BatchNorm1d(affine=False))."
            )
        mapping.update({layout.head_prefix + official: ours for official, ours in map_audioset_head(head).items()})
        num_labels = int(head["head.weight"][0])
        labels = raw.get("id2label") or {}
        if "id2label" in given and len(given["id2label"]) == num_labels:
            names = [given["id2label"][key] for key in sorted(given["id2label"], key=int)]
        elif len(labels) == num_labels:
            names = [labels[key] for key in sorted(labels, key=int)]
        else:
            names = [f"LABEL_{i}" for i in range(num_labels)]
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
        config.classifier_pooling = "mean"
        config.use_weighted_layer_sum = False
        if config.problem_type is None:
            config.problem_type = "multi_label_classification"  # AudioSet tagging: independent sigmoids
    tensors = read_tensors(files, mapping)
    left_out = sorted(set(shapes) - set(mapping))
    # Expected leftovers: the fixed position table (ours is recomputed), the front end's buffers (ours is
    # MatpacFeatureExtractor), an AudioSet head when the class has no place for it.
    not_understood = [
        key
        for key in left_out
        if not FIXED_OR_FRONT_END.search(key)
        and not (layout.head_prefix is not None and key.startswith(layout.head_prefix + "head"))
    ]
    if not_understood:
        logger.warning(
            "%s: tensors outside the official inference layout, not loaded: %s.",
            name_or_path,
            describe_keys(not_understood),
        )
    if loads_audioset_head and not with_head:
        logger.warning(
            "%s has no official AudioSet head (head.weight, head_norm.*): the classifier of %s is newly initialised.",
            name_or_path,
            class_name,
        )
    logger.info(
        "%s: the official MATPAC inference layout%s, converted while loading into %s (%d layers, width %d, %d heads, "
        "max_frames %d%s). Not loaded: %s.",
        name_or_path,
        f" under the prefix '{layout.prefix}'" if layout.prefix else "",
        class_name,
        sizes["num_hidden_layers"],
        sizes["hidden_size"],
        sizes["num_attention_heads"],
        sizes["max_frames"],
        f", AudioSet head of {config.num_labels} classes" if with_head else "",
        describe_keys(left_out) if left_out else "nothing",
    )
    return LoadingPlan(
        layout=layout, config=config, state_dict={mapping[name]: tensor for name, tensor in tensors.items()}
    )


def check_encoder_loaded(model, loading_info: dict, name_or_path, encoder_prefix: str) -> None:
    """Raises a [`CheckpointError`] when `from_pretrained` left any encoder tensor of `model` at its random
    initialisation (missing from the checkpoint, or skipped for a size mismatch): it names what the checkpoint holds
    and the fix."""
    encoder = {name for name in model.state_dict() if name.startswith(encoder_prefix)}
    missing = set(loading_info.get("missing_keys", ())) & encoder
    mismatched = {entry[0] if isinstance(entry, tuple) else entry for entry in loading_info.get("mismatched_keys", ())}
    missing |= mismatched & encoder
    if not missing:
        return
    found = loading_info.get("unexpected_keys", ())
    raise CheckpointError(
        f"{name_or_path} does not hold {len(missing)} of the {len(encoder)} encoder tensors of "
        f"{type(model).__name__} (e.g. {describe_keys(missing, limit=4)}): they would stay randomly initialised. "
        f"Tensors it has that were not used: {describe_keys(found) if found else '(none)'}. Understood layouts: a "
        "matpac-hf folder (save_pretrained), and the authors' inference layout under any prefix ('patch_embed.proj.*', "
        "'student_encoder.blocks.{i}.*': the release .pt files and the auriankelen/matpac_* Hub repositories). For an "
        "official .pt file run `python -m matpac_hf.convert_original_checkpoint --checkpoint_path FILE --output_dir "
        "DIR` and load DIR; a folder of another model needs that model's own classes."
    )
