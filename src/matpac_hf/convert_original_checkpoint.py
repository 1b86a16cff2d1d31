# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Convert an official MATPAC / MATPAC++ checkpoint (`.pt`) into a Hugging Face folder.

```bash
python -m matpac_hf.convert_original_checkpoint \
    --checkpoint_path matpac_plus_6s_2048_enconly.pt --output_dir matpac-base [--hub_model_id me/matpac-base]
```

The official files are the GitHub release assets of https://github.com/aurianworld/matpac (`matpac_10_2048.pt`,
`matpac_plus_6s_2048_enconly.pt`, `matpac_plus_music_6s_2048_enconly.pt`, `matpac_plus_as_48_1_map_enc_and_head.pt`,
and the downstream probes in `Weights_probes_matpac.zip`). The weights are the authors', not under matpac-hf's MIT
licence: the card written beside them says the licence the official repository states (`apache-2.0`: its README's
badge, linking its LICENSE file) and where the weights come from, unless `--license` is given.

The output folder holds `config.json` (sizes inferred from the tensor shapes), `model.safetensors`,
`preprocessor_config.json` ([`MatpacFeatureExtractor`]), a model card `README.md` and the code files, so it loads with
`AutoModel.from_pretrained(folder)` (and with `trust_remote_code=True` where `matpac_hf` is not installed).

Understood inputs (docs/method.md, section 7), recognised by the names and shapes found in the file:

* a released encoder: a flat state dict `patch_embed.proj.*`, `cls_token`, `pos_embed`, `student_encoder.blocks.{i}.*`,
  `student_encoder.norm.*` -> [`MatpacModel`];
* the AudioSet-fine-tuned release: the encoder plus `head_norm` (BatchNorm running statistics) and `head.*`
  -> [`MatpacForAudioClassification`] with `classifier_pooling="mean"`;
* a downstream probe `probe.weight/bias` on the 3840-d clip embedding, given with `--probe_path` beside the encoder
  -> [`MatpacForAudioClassification`] with `classifier_pooling="concat"`;
* a fairseq training checkpoint (state under `model`, beside `cfg`, `optimizer_history`, ...; teachers as nested dicts
  `_ema` and `_cls_head_ema`): its student encoder -> [`MatpacModel`], or with `--model_type pretraining` everything
  (student, teacher, predictor, heads, center) -> `MatpacForPreTraining`; head counts from its `cfg`, and its
  `num_updates` to `training_progress.json`;
* a folder or Hub repository id in the official inference layout under any wrapper prefix (the authors'
  `auriankelen/matpac_*` repositories) -> [`MatpacModel`], or [`MatpacForAudioClassification`] when it has the
  AudioSet head ([`convert_folder`]).

Anything else is refused with a message naming what was found.
"""

import argparse
import copy
import csv
import json
import logging
import re
import sys
from pathlib import Path

import torch

from . import modeling_matpac
from .configuration_matpac import NUM_MEL_BINS, MatpacConfig
from .feature_extraction_matpac import MatpacFeatureExtractor
from .model_card import (
    OFFICIAL_LICENSE,
    OFFICIAL_RELEASES,
    pretraining_objective,
    render_model_card,
    weights_notice,
)
from .modeling_matpac import MatpacForAudioClassification, MatpacModel, build_2d_sincos_position_table
from .official_checkpoints import (
    CheckpointError,
    block_indices,
    checkpoint_shapes,
    describe_keys,
    find_official_layout,
    map_audioset_head,
    map_blocks,
    map_encoder,
    raw_config,
    require,
    sizes_from_shapes,
    weight_files,
)


logger = logging.getLogger("matpac_hf.convert")

MODEL_TYPES = ("auto", "encoder", "pretraining", "audio_classification")
CLASSIFIER_PROBLEM_TYPES = ("single_label_classification", "multi_label_classification")
# Probe file names (as released) of multi-label tasks: sigmoid scores, not softmax.
MULTI_LABEL_PROBE_NAMES = ("fsd50k", "openmic", "mtg", "mtt", "magnatagatune")

# Entries fairseq writes beside `model` in a training checkpoint.
FAIRSEQ_ENTRIES = {
    "args",
    "cfg",
    "criterion",
    "extra_state",
    "last_optimizer_state",
    "optimizer_history",
    "task_state",
}
# fairseq's EMA helper is not a module: the teachers are stored as nested dicts under these keys.
TEACHER_ENCODER_KEY = "_ema"
TEACHER_HEAD_KEY = "_cls_head_ema"
_PARTS_KEY = {TEACHER_ENCODER_KEY: "teacher_encoder", TEACHER_HEAD_KEY: "teacher_head"}

# Key families of the official files, by prefix (or exact name).
ENCODER_KEYS = ("patch_embed.", "cls_token", "pos_embed", "student_encoder.")
AUDIOSET_HEAD_KEYS = ("head_norm.", "head.")
PROBE_KEYS = ("probe.",)
PRETRAINING_KEYS = ("decoder.", "mcl_heads.", "cls_student_head.", "cls_head_loss.")


def _has_family(keys, family) -> bool:
    return any(key == prefix or key.startswith(prefix) for key in keys for prefix in family)


# ----------------------------------------------------------------------------------------------------------------------
# Reading the file
# ----------------------------------------------------------------------------------------------------------------------


def load_official_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict:
    """Reads an official `.pt` file and returns its parts.

    Returns a dict with:
        `state`: flat `{name: tensor}` of the model (the fairseq `model` entry, or the file itself);
        `teacher_encoder`: the `_ema` nested dict or `None`; `teacher_head`: the `_cls_head_ema` dict or `None`;
        `layout`: `"state_dict"` or `"fairseq"`; `cfg`: the fairseq `cfg` entry (a dict, or an omegaconf
        `DictConfig` when loaded with `trust_pickle`) or `None`; `progress`: [`training_progress`] of a fairseq file
        (`{}` for a release file, which records none).

    Raises `CheckpointError` for a file that is not a dict of tensors in a known wrapper.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint file at {path}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as error:  # noqa: BLE001 - torch raises several types; all mean "cannot read safely"
        if trust_pickle:
            raise CheckpointError(f"Could not read {path} with torch.load: {error}") from error
        raise CheckpointError(
            f"Could not read {path} with torch.load(weights_only=True): {type(error).__name__}: {error}\n"
            "Either the file is not a PyTorch checkpoint, or it stores Python objects besides tensors and plain "
            "containers. If you trust the file's origin, pass --trust_pickle to load it with weights_only=False "
            "(this runs code from the file)."
        ) from error

    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"{path} holds a {type(checkpoint).__name__}, not a state dict. Expected a mapping of parameter names "
            "to tensors (an official MATPAC release), or a fairseq training checkpoint with the state under 'model'."
        )

    layout, fairseq_cfg, progress = "state_dict", None, {}
    if isinstance(checkpoint.get("model"), dict):
        others = set(checkpoint) - {"model"}
        unknown = others - FAIRSEQ_ENTRIES
        if unknown:
            raise CheckpointError(
                f"{path} wraps a state under 'model' beside unknown entries {sorted(unknown)}. Known wrapper: a "
                f"fairseq training checkpoint ('model' beside {sorted(FAIRSEQ_ENTRIES)})."
            )
        fairseq_cfg = checkpoint.get("cfg")
        progress = training_progress(checkpoint)
        checkpoint = checkpoint["model"]
        layout = "fairseq"

    teacher_encoder = checkpoint.get(TEACHER_ENCODER_KEY)
    teacher_head = checkpoint.get(TEACHER_HEAD_KEY)
    state = {key: value for key, value in checkpoint.items() if key not in (TEACHER_ENCODER_KEY, TEACHER_HEAD_KEY)}
    not_tensors = {key: type(value).__name__ for key, value in state.items() if not isinstance(value, torch.Tensor)}
    for name, nested in ((TEACHER_ENCODER_KEY, teacher_encoder), (TEACHER_HEAD_KEY, teacher_head)):
        if nested is not None and not (
            isinstance(nested, dict) and all(isinstance(v, torch.Tensor) for v in nested.values())
        ):
            not_tensors[name] = type(nested).__name__
    if not_tensors:
        listing = ", ".join(f"{key!r} ({kind})" for key, kind in sorted(not_tensors.items())[:12])
        raise CheckpointError(
            f"{path} is a dict but not a state dict: entries {listing} are not tensors. Unknown wrapper; known "
            "layouts are a flat state dict (official release) and a fairseq training checkpoint (state under "
            "'model' beside 'cfg', 'optimizer_history', ...)."
        )
    if not _has_family(state, ENCODER_KEYS):
        raise CheckpointError(
            f"{path} holds no MATPAC encoder weights: none of the key families {list(ENCODER_KEYS)} was found. "
            f"Keys found: {describe_keys(state) or '(none)'}."
        )
    return {
        "state": state,
        "teacher_encoder": teacher_encoder,
        "teacher_head": teacher_head,
        "layout": layout,
        "cfg": fairseq_cfg,
        "progress": progress,
    }


def load_probe(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads a downstream probe file (`probe.weight`, `probe.bias`)."""
    try:
        probe = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"Could not read the probe file {path}: {type(error).__name__}: {error}") from error
    if not isinstance(probe, dict) or set(probe) != {"probe.weight", "probe.bias"}:
        found = describe_keys(probe) if isinstance(probe, dict) else type(probe).__name__
        raise CheckpointError(
            f"{path} is not an official probe file: expected exactly 'probe.weight' and 'probe.bias', found {found}."
        )
    return probe


# ----------------------------------------------------------------------------------------------------------------------
# Sizes from shapes
# ----------------------------------------------------------------------------------------------------------------------


def infer_config(
    state: dict,
    num_mel_bins: int = NUM_MEL_BINS,
    num_attention_heads: int | None = None,
    max_frames: int | None = None,
    **extra,
) -> MatpacConfig:
    """Encoder sizes from the tensor shapes ([`official_checkpoints.sizes_from_shapes`]; the head count, invisible in
    the shapes, is `num_attention_heads`, else 12 for ViT-B's width 768, else an error), plus `extra` fields."""
    return MatpacConfig(
        **{**sizes_from_shapes(state, num_mel_bins, num_attention_heads, max_frames), **extra},
    )


def check_position_table(state: dict, config: MatpacConfig, key: str = "pos_embed", width: int | None = None):
    """Compares a checkpoint's fixed position table with ours; warns loudly with the largest difference."""
    if key not in state:
        return None
    width = width or config.hidden_size
    table = state[key].reshape(-1, width).float()
    num_time_patches = (table.shape[0] - 1) // config.num_frequency_patches
    expected = build_2d_sincos_position_table(config.num_frequency_patches, num_time_patches, width)
    max_difference = float((table - expected).abs().max())
    if max_difference > 1e-5:
        logger.warning(
            "\n" + "!" * 100 + "\n"
            f"'{key}' in the checkpoint differs from the fixed 2-D sin-cos table by up to {max_difference:.3g}.\n"
            "The converted model uses the fixed table (it is not stored): its outputs will NOT match the checkpoint's "
            "original code. Check --num_mel_bins and the checkpoint's origin.\n" + "!" * 100
        )
    else:
        logger.info("'%s' matches the fixed sin-cos table (max difference %.2g).", key, max_difference)
    return max_difference


# ----------------------------------------------------------------------------------------------------------------------
# Name mapping
# ----------------------------------------------------------------------------------------------------------------------


def _map_classification_head(state: dict, official_prefix: str, our_prefix: str) -> dict[str, str]:
    """DINO head: `mlp.{k}.*` keeps its name; the weight-normed prototype layer's `last_layer.weight_g` / `weight_v`
    become the parametrisation's `original0` (gain) / `original1` (direction)."""
    mapping = {}
    for key in state:
        if not key.startswith(official_prefix):
            continue
        name = key[len(official_prefix) :]
        if re.fullmatch(r"mlp\.\d+\.(weight|bias)", name):
            mapping[key] = our_prefix + name
        elif name == "last_layer.weight_g":
            mapping[key] = our_prefix + "last_layer.parametrizations.weight.original0"
        elif name == "last_layer.weight_v":
            mapping[key] = our_prefix + "last_layer.parametrizations.weight.original1"
    return mapping


def map_pretraining(state: dict) -> dict[str, str]:
    """`{official name: our name}` for `MatpacForPreTraining`. `state` is the fairseq `model` state with the nested
    teachers flattened as `_ema.*` and `_cls_head_ema.*`."""
    mapping = map_encoder(state, prefix="matpac.")
    mapping.update(map_blocks(state, f"{TEACHER_ENCODER_KEY}.", "teacher_encoder."))
    mapping.update(map_blocks(state, "decoder.decoder_", "predictor.", norm=("norm", "decoder_norm")))
    # MATPAC++ files keep the (unused) single `decoder_pred` beside the K heads: the official decoder always builds it.
    names = ["decoder_embed.weight", "decoder_embed.bias"]
    if not _has_family(state, ("mcl_heads.",)):
        names += ["decoder_pred.weight", "decoder_pred.bias"]
    for name in names:
        if f"decoder.{name}" in state:
            mapping[f"decoder.{name}"] = f"predictor.{name}"
    if "decoder.mask_token" in state:
        mapping["decoder.mask_token"] = "predictor.mask_token"
    for key in state:
        match = re.fullmatch(r"mcl_heads\.mcl_heads\.(\d+)\.(weight|bias)", key)
        if match:
            mapping[key] = f"predictor.mcl_heads.{match[1]}.{match[2]}"
    mapping.update(_map_classification_head(state, "cls_student_head.", "student_head."))
    mapping.update(_map_classification_head(state, f"{TEACHER_HEAD_KEY}.", "teacher_head."))
    if "cls_head_loss.center" in state:
        mapping["cls_head_loss.center"] = "classification_loss.center"
    return mapping


# Training hyper-parameters that tensor shapes cannot show: fairseq `cfg` entry -> MatpacConfig field (first found
# wins; `model.ema_anneal_end_step` defaults to `optimization.max_update` in the official configuration).
FAIRSEQ_CFG_FIELDS = (
    ("model.ema_anneal_end_step", "total_steps"),
    ("optimization.max_update", "total_steps"),
    ("model.mask_ratio", "mask_ratio"),
    ("model.ema_decay", "ema_decay_start"),
    ("model.ema_end_decay", "ema_decay_end"),
    ("model.cls_head_cfg.ema_decay", "head_ema_decay_start"),
    ("model.cls_head_cfg.ema_end_decay", "head_ema_decay_end"),
    ("model.cls_head_cfg.warmup_teacher_temp", "teacher_temperature_start"),
    ("model.cls_head_cfg.teacher_temp", "teacher_temperature_end"),
    ("model.cls_head_cfg.warmup_n_steps", "teacher_temperature_warmup_steps"),
    ("model.mcl_heads.temperature_start", "mcl_temperature_start"),
    ("model.mcl_heads.temperature_end", "mcl_temperature_min"),
    ("model.mcl_heads.decay_rate", "mcl_temperature_decay"),
    ("criterion.loss_weights.loss_pred", "prediction_loss_weight"),
    ("criterion.loss_weights.loss_cls", "classification_loss_weight"),
)
_INTEGER_FIELDS = ("total_steps", "teacher_temperature_warmup_steps")


# The head counts, which no tensor shape shows: fairseq `cfg` entry -> MatpacConfig field.
FAIRSEQ_CFG_HEADS = (
    ("model.encoder.num_heads", "num_attention_heads"),
    ("model.decoder.decoder_num_heads", "decoder_num_attention_heads"),
)


def _cfg_value(cfg, dotted: str):
    node = cfg
    for part in dotted.split("."):
        try:
            node = node[part]
        except Exception:  # noqa: BLE001 - missing key, unresolvable interpolation, not a mapping
            return None
    return node


def head_counts_from_fairseq_cfg(cfg) -> dict:
    """`num_attention_heads` / `decoder_num_attention_heads` stated by a fairseq `cfg` (those it states)."""
    if cfg is None:
        return {}
    found = {}
    for dotted, field_name in FAIRSEQ_CFG_HEADS:
        value = _cfg_value(cfg, dotted)
        if isinstance(value, int) and not isinstance(value, bool):
            found[field_name] = value
    return found


def _choose_heads(field_name: str, given: int | None, from_cfg: dict) -> int | None:
    """The command line's value, else the checkpoint cfg's; a contradiction between both is an error."""
    stated = from_cfg.get(field_name)
    if given is not None and stated is not None and given != stated:
        raise CheckpointError(
            f"--{field_name} {given} contradicts the checkpoint's cfg ({stated} heads): leave the option out."
        )
    return given if given is not None else stated


def config_from_fairseq_cfg(cfg) -> dict:
    """MatpacConfig fields read from a fairseq `cfg` (plain dict or omegaconf `DictConfig`): run length, masking,
    EMA decays, temperatures, MATPAC++ schedule and loss weights. Entries that are absent, unresolvable or not numbers
    are left to the defaults."""
    fields = {}
    for dotted, field_name in FAIRSEQ_CFG_FIELDS:
        if field_name in fields:
            continue
        node = _cfg_value(cfg, dotted)
        if isinstance(node, (int, float)) and not isinstance(node, bool):
            fields[field_name] = int(node) if field_name in _INTEGER_FIELDS else float(node)
    return fields


def infer_pretraining_sizes(state: dict, hidden_size: int, decoder_num_attention_heads: int | None = None) -> dict:
    """Predictor, classification-head and MATPAC++ sizes from the tensor shapes of a training checkpoint. The
    predictor's head count is `decoder_num_attention_heads`, else 16 for the official width 512, else an error."""
    decoder_embed = require(state, "decoder.decoder_embed.weight", "predictor input projection")
    decoder_width = int(decoder_embed.shape[0])
    if decoder_num_attention_heads is None:
        if decoder_width != 512:
            raise CheckpointError(
                f"The predictor is {decoder_width} wide and the checkpoint's cfg states no "
                "'model.decoder.decoder_num_heads': give --decoder_num_attention_heads (only the official width 512 "
                "implies 16 heads)."
            )
        decoder_num_attention_heads = 16
    decoder_blocks = block_indices(state, "decoder.decoder_")
    if not decoder_blocks:
        raise CheckpointError("The checkpoint has no 'decoder.decoder_blocks.{i}.*' weights (predictor blocks).")
    direction = require(state, "cls_student_head.last_layer.weight_v", "student head prototype layer")
    mlp_layers = sorted(
        int(match[1]) for key in state if (match := re.fullmatch(r"cls_student_head\.mlp\.(\d+)\.weight", key))
    )
    if not mlp_layers:
        raise CheckpointError("The checkpoint has no 'cls_student_head.mlp.{k}.weight' (student head MLP).")
    mcl_heads = sorted(
        {int(match[1]) for key in state if (match := re.fullmatch(r"mcl_heads\.mcl_heads\.(\d+)\.weight", key))}
    )
    sizes = dict(
        decoder_hidden_size=decoder_width,
        decoder_num_hidden_layers=len(decoder_blocks),
        decoder_num_attention_heads=int(decoder_num_attention_heads),
        decoder_intermediate_size=int(
            require(state, "decoder.decoder_blocks.0.mlp.fc1.weight", "predictor MLP").shape[0]
        ),
        head_hidden_size=int(state["cls_student_head.mlp.0.weight"].shape[0]),
        head_num_layers=len(mlp_layers),
        head_bottleneck_size=int(direction.shape[1]),
        head_num_prototypes=int(direction.shape[0]),
        use_mcl=bool(mcl_heads),
    )
    if mcl_heads:
        sizes["mcl_num_heads"] = len(mcl_heads)
    return sizes


# ----------------------------------------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------------------------------------


def read_labels(path: str | Path, sort_column: str | None = None) -> list[str]:
    """Class names in classifier order from a label file:

    * `.json`: `{index: name}`, `{name: index}` or a list of names;
    * `.csv` with a header holding `display_name` (or `name` / `label`): ordered by an `index` column when there is
      one, else by row; `sort_column` (e.g. `mid`) sorts the rows by that column instead (numerically when it holds
      integers; the official AudioSet head orders its 527 classes by sorting its CSV by `mid`);
    * `.csv` without a header: `index,name` rows (the official `fsd50k_mapping.csv`);
    * anything else: one name per line.

    Names must be unique (`label2id` maps them back to ids).
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, list):
            return _unique_labels(path, [str(name) for name in data])
        if not isinstance(data, dict) or not data:
            raise ValueError(f"{path}: expected a JSON list of names or a dict {{index: name}} / {{name: index}}.")
        if all(str(key).lstrip("-").isdigit() for key in data):
            index_to_name = {int(key): str(value) for key, value in data.items()}
        elif all(isinstance(value, int) for value in data.values()):
            index_to_name = {value: str(key) for key, value in data.items()}
        else:
            raise ValueError(f"{path}: a JSON dict must map indices to names or names to integer indices.")
        return _unique_labels(path, _names_by_index(path, index_to_name))
    if path.suffix.lower() == ".csv":
        table = [row for row in csv.reader(text.splitlines()) if row]
        if table and len(table[0]) >= 2 and table[0][0].strip().isdigit():  # no header: `index,name` rows
            return _unique_labels(path, _names_by_index(path, {int(row[0]): row[1] for row in table}))
        rows = list(csv.DictReader(text.splitlines()))
        columns = rows[0].keys() if rows else []
        name_column = next((c for c in ("display_name", "name", "label") if c in columns), None)
        if name_column is None:
            raise ValueError(
                f"{path}: the CSV needs a header with a 'display_name' (or 'name' / 'label') column, or no header and "
                f"'index,name' rows; found {list(columns)}."
            )
        sort_column = sort_column or ("index" if "index" in columns else None)
        if sort_column is not None:
            if sort_column not in columns:
                raise ValueError(f"{path}: no column {sort_column!r} to sort by; found {list(columns)}.")
            values = [row[sort_column] for row in rows]
            numeric = all(value.strip().lstrip("-").isdigit() for value in values)
            rows = sorted(rows, key=lambda row: int(row[sort_column]) if numeric else row[sort_column])
        return _unique_labels(path, [row[name_column] for row in rows])
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if any(not line.strip() for line in lines):
        raise ValueError(f"{path}: empty line inside the label list (one label per line expected).")
    return _unique_labels(path, [line.strip() for line in lines])


def _names_by_index(path: Path, index_to_name: dict[int, str]) -> list[str]:
    if sorted(index_to_name) != list(range(len(index_to_name))):
        raise ValueError(f"{path}: label indices must be exactly 0..{len(index_to_name) - 1}.")
    return [index_to_name[i] for i in range(len(index_to_name))]


def _unique_labels(path: Path, names: list[str]) -> list[str]:
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: label names must be unique (label2id maps names to ids); repeated: {duplicates}.")
    return names


# ----------------------------------------------------------------------------------------------------------------------
# Conversion
# ----------------------------------------------------------------------------------------------------------------------


def training_progress(checkpoint: dict) -> dict:
    """How far a fairseq training checkpoint got: `num_updates` (optimiser steps, from the last
    `optimizer_history` entry) and `epoch` (fairseq's epoch counter, `extra_state["train_iterator"]["epoch"]`), each
    only when recorded."""
    progress = {}
    history = checkpoint.get("optimizer_history")
    if isinstance(history, list) and history and isinstance(history[-1], dict):
        num_updates = history[-1].get("num_updates")
        if isinstance(num_updates, int) and not isinstance(num_updates, bool):
            progress["num_updates"] = num_updates
    extra_state = checkpoint.get("extra_state")
    iterator = extra_state.get("train_iterator") if isinstance(extra_state, dict) else None
    if isinstance(iterator, dict) and isinstance(iterator.get("epoch"), int):
        progress["epoch"] = iterator["epoch"]
    return progress


# ----------------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------------

# The authors' release files (GitHub releases of aurianworld/matpac), as its inference README describes them.
OFFICIAL_RELEASE_FILES = {
    "matpac_10_2048.pt": ("MATPAC", "MATPAC, self-supervised on AudioSet (the paper's model)"),
    "matpac_plus_6s_2048_enconly.pt": ("MATPAC++", "MATPAC++, self-supervised on AudioSet (general audio)"),
    "matpac_plus_music_6s_2048_enconly.pt": ("MATPAC++", "MATPAC++, self-supervised on music"),
    "matpac_plus_as_48_1_map_enc_and_head.pt": (
        "MATPAC++",
        "MATPAC++, self-supervised on AudioSet then fine-tuned on AudioSet (encoder and 527-class head)",
    ),
}
OFFICIAL_PROBES_ARCHIVE = "Weights_probes_matpac.zip"


# The authors' Hub repositories (trust_remote_code ports of the inference code; same code, one config.json each).
OFFICIAL_HUB_REPOSITORIES = {
    "auriankelen/matpac_general_audio": ("MATPAC++", "MATPAC++, self-supervised on AudioSet (general audio)"),
    "auriankelen/matpac_music": ("MATPAC++", "MATPAC++, self-supervised on music"),
    "auriankelen/matpac_audioset_finetune_encoder": (
        "MATPAC++",
        "MATPAC++, self-supervised on AudioSet then fine-tuned on AudioSet (encoder)",
    ),
    "auriankelen/matpac_audioset_finetune_classifier": (
        "MATPAC++",
        "MATPAC++, self-supervised on AudioSet then fine-tuned on AudioSet (encoder and 527-class head)",
    ),
}


def _weights_origin(
    checkpoint_path: Path, probe_path: Path | None, hub_repository: str | None = None
) -> tuple[str | None, str]:
    """(method if known, a sentence on where the weights come from); file names only, never their folders."""
    if hub_repository:
        method, description = OFFICIAL_HUB_REPOSITORIES.get(hub_repository, (None, None))
        origin = f"{description}: " if description else ""
        return method, origin + (
            f"the Hub repository `{hub_repository}`, converted with `python -m matpac_hf.convert_original_checkpoint`."
        )
    method, description = OFFICIAL_RELEASE_FILES.get(checkpoint_path.name, (None, None))
    if description:
        origin = f"{description}: `{checkpoint_path.name}` from the authors' GitHub releases ({OFFICIAL_RELEASES})"
    else:
        origin = f"`{checkpoint_path.name}`, an official-layout MATPAC checkpoint"
        if checkpoint_path.is_dir():
            origin = f"`{checkpoint_path.name}`, a folder in the official inference layout (e.g. an authors' Hub repository)"
    if probe_path is not None:
        origin += (
            f", with the downstream probe `{probe_path.name}` (the authors release one per task and encoder in "
            f"`{OFFICIAL_PROBES_ARCHIVE}`)"
        )
    return method, origin + "; converted with `python -m matpac_hf.convert_original_checkpoint`."


def _description(checkpoint_path: Path, hub_repository: str | None, default: str) -> str:
    known = OFFICIAL_HUB_REPOSITORIES if hub_repository else OFFICIAL_RELEASE_FILES
    return known.get(hub_repository or checkpoint_path.name, ("", default))[1]


def model_card_for_conversion(
    model,
    checkpoint_path: str | Path,
    parts: dict,
    model_type: str,
    probe_path: str | Path | None = None,
    license: str | None = None,
    hub_model_id: str | None = None,
    base_model: str | None = None,
) -> str:
    """The README.md of a converted folder. The weights are the authors': without `license`, the card says the licence
    the official repository states (`apache-2.0`, [`OFFICIAL_LICENSE`]) and where they come from, with what could not
    be verified ([`weights_notice`]); never MIT. A fairseq checkpoint's recorded
    steps and epoch are reported; a release file records none, and the card says so. No local path is written."""
    config = model.config
    checkpoint_path = Path(checkpoint_path)
    probe_path = Path(probe_path) if probe_path is not None else None
    hub_repository = parts.get("hub_repository")
    method, origin = _weights_origin(checkpoint_path, probe_path, hub_repository)
    from_file = hub_repository is None and not parts.get("local_folder")
    notice = weights_notice(checkpoint_path.name if from_file else None, hub_repository)
    progress = parts.get("progress") or {}
    if progress:
        recorded = [f"{progress['num_updates']} optimiser steps"] if "num_updates" in progress else []
        recorded += [f"fairseq epoch {progress['epoch']}"] if "epoch" in progress else []
        training = f"The checkpoint records {', '.join(recorded)} of the authors' fairseq training."
        hyperparameters = {name: progress[name] for name in ("num_updates", "epoch") if name in progress}
    else:
        training = (
            "The release file records no training progress (steps, epochs); see the papers for the authors' "
            "recipes (MATPAC: arXiv 2502.12031; MATPAC++: arXiv 2508.12709)."
        )
        hyperparameters = {}
    if model_type == "pretraining":
        hyperparameters["total_steps (schedule length in the config)"] = config.total_steps
    fields = dict(
        license=license or OFFICIAL_LICENSE,
        license_note=f"`{license}`, as given when converting. " + notice if license else notice,
        base_model=base_model,
        repo_id=hub_model_id,
        model_name=hub_model_id,
        tags=["matpac++"] if method == "MATPAC++" or config.use_mcl else None,
        training_summary=training,
        training_hyperparameters=hyperparameters or None,
        evaluation_results=(
            "Not re-evaluated after conversion; the conversion is checked for numerical parity with the official "
            "inference code (matpac-hf's tests/test_conversion_and_parity.py). See the papers for the authors' results."
        ),
    )
    if model_type == "audio_classification":
        pooling = config.classifier_pooling
        fields.update(
            model_summary=f"{_description(checkpoint_path, hub_repository, 'A MATPAC audio classifier')}"
            f"{', with an official downstream probe' if probe_path is not None else ''}, converted for transformers.",
            training_summary=f"Weights: {origin} {training}",
            classifier=(
                "the official AudioSet head: mean of the tokens, BatchNorm1d without affine parameters, linear"
                if pooling == "mean"
                else f"the official linear probe on the {config.frame_embedding_size}-d clip embedding"
            ),
            problem_type=config.problem_type.replace("_label_classification", "-label classification"),
            num_labels=config.num_labels,
            labels=[config.id2label[i] for i in range(config.num_labels)],
        )
        template = "audio_classification"
    else:
        size = config.frame_embedding_size
        fields.update(
            model_summary=f"{_description(checkpoint_path, hub_repository, 'A MATPAC audio encoder')}, "
            f"converted for transformers: a ViT that turns 16 kHz audio into one {size}-d frame embedding per "
            f"160 ms and a {size}-d clip embedding.",
            method=method,
            source=origin,
            architecture=f"{config.num_hidden_layers} blocks, width {config.hidden_size}, "
            f"{config.num_attention_heads} heads",
            embedding_size=config.frame_embedding_size,
        )
        if model_type == "pretraining":
            fields["objective"] = pretraining_objective(config)  # the numbers read from the fairseq cfg
        elif method == "MATPAC++" and not config.use_mcl:  # an encoder-only file cannot show the MCL heads
            official = copy.deepcopy(config)
            official.use_mcl = True
            fields["objective"] = pretraining_objective(official) + " (Official settings.)"
        template = "pretrained_encoder"
    return render_model_card(template, **{key: value for key, value in fields.items() if value is not None})


def _csv_header(path: str | Path) -> set[str]:
    """Column names of a CSV label file's first row (empty for other files)."""
    if Path(path).suffix.lower() != ".csv":
        return set()
    with open(path, encoding="utf-8") as handle:
        return {name.strip() for name in next(csv.reader(handle), [])}


def _resolve_model_type(model_type: str, parts: dict, probe: dict | None) -> str:
    state = parts["state"]
    has_audioset_head = _has_family(state, AUDIOSET_HEAD_KEYS)
    if model_type == "auto":
        return "audio_classification" if (has_audioset_head or probe is not None) else "encoder"
    if model_type == "audio_classification" and not (has_audioset_head or probe is not None):
        raise CheckpointError(
            "--model_type audio_classification needs a classifier: the checkpoint has no 'head.*' / 'head_norm.*' "
            "(AudioSet-fine-tuned release) and no --probe_path was given."
        )
    if model_type == "pretraining" and not _has_family(state, PRETRAINING_KEYS):
        raise CheckpointError(
            "--model_type pretraining needs a training checkpoint (predictor 'decoder.*', heads 'cls_student_head.*', "
            "...); this file only holds " + describe_keys(state)
        )
    return model_type


def _fill(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source_names: dict[str, str]) -> dict:
    """Loads `{our name: tensor}` into `model` after checking every shape; returns the load report."""
    target = model.state_dict()
    wrong_shapes = [
        f"{source_names[name]} {tuple(tensor.shape)} -> {name} expects {tuple(target[name].shape)}"
        for name, tensor in tensors.items()
        if name in target and tuple(tensor.shape) != tuple(target[name].shape)
    ]
    if wrong_shapes:
        raise CheckpointError(
            "Tensor shapes do not fit the inferred architecture (check --num_mel_bins / --num_attention_heads):\n  "
            + "\n  ".join(wrong_shapes)
        )
    not_in_model = sorted(name for name in tensors if name not in target)
    if not_in_model:
        raise CheckpointError(f"Internal name mapping produced names the model does not have: {not_in_model}")
    result = model.load_state_dict(tensors, strict=False)
    if result.missing_keys:
        raise CheckpointError(
            "The checkpoint lacks weights the model needs (they would stay random): "
            + describe_keys(result.missing_keys)
        )
    return result


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    model_type: str = "auto",
    probe_path: str | Path | None = None,
    label_file: str | Path | None = None,
    label_sort_column: str | None = None,
    num_mel_bins: int = NUM_MEL_BINS,
    num_attention_heads: int | None = None,
    decoder_num_attention_heads: int | None = None,
    max_frames: int | None = None,
    trust_pickle: bool = False,
    problem_type: str | None = None,
    license: str | None = None,
    hub_model_id: str | None = None,
    base_model: str | None = None,
):
    """Converts one official checkpoint into `output_dir`, with a model card (`README.md`, see
    [`model_card_for_conversion`]: `license: apache-2.0`, the official repository's, unless `license` is given); returns the converted model (in eval
    mode). `hub_model_id` names the repository the folder will be pushed to (used in the card's snippets);
    `base_model` is the Hub id of the encoder a probe sits on.

    Raises [`CheckpointError`] (a `ValueError`) for files it does not understand.
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
    if problem_type not in (None, *CLASSIFIER_PROBLEM_TYPES):
        raise ValueError(f"problem_type must be one of {CLASSIFIER_PROBLEM_TYPES}, got {problem_type!r}.")
    if not Path(checkpoint_path).is_file():  # a folder or a Hub repository in the official inference layout
        if probe_path is not None or model_type == "pretraining" or label_file is not None:
            raise CheckpointError(
                "--probe_path, --label_file and --model_type pretraining apply to official .pt files; "
                f"{checkpoint_path} is not a file (read as a folder or Hub repository)."
            )
        return convert_folder(
            checkpoint_path, output_dir, model_type, num_attention_heads, problem_type, license, hub_model_id
        )
    parts = load_official_checkpoint(checkpoint_path, trust_pickle=trust_pickle)
    state = dict(parts["state"])
    from_cfg_heads = head_counts_from_fairseq_cfg(parts["cfg"])
    num_attention_heads = _choose_heads("num_attention_heads", num_attention_heads, from_cfg_heads)
    decoder_num_attention_heads = _choose_heads(
        "decoder_num_attention_heads", decoder_num_attention_heads, from_cfg_heads
    )
    if from_cfg_heads:
        logger.info("Head counts from the fairseq 'cfg': %s", from_cfg_heads)
    probe = load_probe(probe_path) if probe_path is not None else None
    model_type = _resolve_model_type(model_type, parts, probe)
    logger.info(
        "Read %s (%s layout, %d tensors); converting to %s.", checkpoint_path, parts["layout"], len(state), model_type
    )

    audioset_head = model_type == "audio_classification" and probe is None
    if audioset_head and label_file is not None and label_sort_column is None and _csv_header(label_file) >= {"mid"}:
        label_sort_column = "mid"
        logger.warning(
            "%s has a 'mid' column: numbering the AudioSet classes by sorted 'mid', as the official code does for "
            "this head (pass --label_sort_column index to keep the file's own order).",
            label_file,
        )
    labels = read_labels(label_file, label_sort_column) if label_file is not None else None
    extra = {}
    if model_type == "audio_classification":
        if probe is not None and _has_family(state, AUDIOSET_HEAD_KEYS):
            raise CheckpointError(
                "The checkpoint already has an AudioSet classifier ('head.*') and a --probe_path was given: convert "
                "one classifier at a time (or --model_type encoder for the encoder alone)."
            )
        if probe is not None:
            classifier_weight, pooling = probe["probe.weight"], "concat"
        else:
            classifier_weight, pooling = require(state, "head.weight", "AudioSet classifier"), "mean"
        num_labels = int(classifier_weight.shape[0])
        if labels is not None and len(labels) != num_labels:
            raise CheckpointError(
                f"{label_file} lists {len(labels)} labels but the classifier has {num_labels} outputs."
            )
        names = labels or [f"LABEL_{i}" for i in range(num_labels)]
        if problem_type is None:
            # AudioSet is multi-label; so are the official probes of FSD50K, OpenMIC and the MTG-Jamendo /
            # MagnaTagATune tag sets, which the official code recognises by their file names
            multi_label = audioset_head or any(
                task in Path(probe_path).name.lower() for task in MULTI_LABEL_PROBE_NAMES
            )
            problem_type = "multi_label_classification" if multi_label else "single_label_classification"
            logger.info("problem_type=%s (pass --problem_type to choose)", problem_type)
        extra = dict(
            problem_type=problem_type,
            classifier_pooling=pooling,
            id2label=dict(enumerate(names)),
            label2id={name: i for i, name in enumerate(names)},
        )
    elif labels is not None or problem_type is not None:
        raise CheckpointError(
            "--label_file and --problem_type only apply to a classifier (AudioSet head or --probe_path)."
        )

    if model_type == "pretraining":
        for nested_key in (TEACHER_ENCODER_KEY, TEACHER_HEAD_KEY):
            if parts[_PARTS_KEY[nested_key]] is None:
                raise CheckpointError(
                    f"--model_type pretraining needs the teacher '{nested_key}' (nested dict) of a fairseq training "
                    "checkpoint; this file has none."
                )
            state.update({f"{nested_key}.{k}": v for k, v in parts[_PARTS_KEY[nested_key]].items()})
        hidden_size = int(require(state, "patch_embed.proj.weight", "patch embedding").shape[0])
        extra = infer_pretraining_sizes(state, hidden_size, decoder_num_attention_heads)
        from_cfg = config_from_fairseq_cfg(parts["cfg"]) if parts["cfg"] is not None else {}
        extra.update(from_cfg)
        if from_cfg:
            logger.info("From the fairseq 'cfg': %s", ", ".join(f"{k}={v}" for k, v in sorted(from_cfg.items())))
        else:
            logger.warning(
                "No training hyper-parameters found in the checkpoint's 'cfg': the schedules in config.json "
                "(total_steps, temperatures, EMA decays) are the official defaults; set them before resuming training."
            )

    config = infer_config(state, num_mel_bins, num_attention_heads, max_frames, **extra)
    check_position_table(state, config)

    prefix = "" if model_type == "encoder" else "matpac."
    if model_type == "pretraining":
        check_position_table(state, config, key="decoder.decoder_pos_embed", width=config.decoder_hidden_size)
        mapping = map_pretraining(state)
        model_class = getattr(modeling_matpac, "MatpacForPreTraining", None)
        if model_class is None:
            raise CheckpointError("This version of matpac_hf has no MatpacForPreTraining; use --model_type encoder.")
    else:
        mapping = map_encoder(state, prefix)
        model_class = MatpacModel
    if model_type == "audio_classification":
        model_class = MatpacForAudioClassification
        if probe is not None:
            state.update(probe)
            mapping.update({"probe.weight": "classifier.weight", "probe.bias": "classifier.bias"})
        else:
            mapping.update(map_audioset_head(state))
    model = model_class(config)
    tensors = {ours: state[official] for official, ours in mapping.items()}
    report = _fill(model, tensors, {ours: official for official, ours in mapping.items()})
    consumed = set(mapping)
    model.eval()

    # Report what was not converted (pos_embed is the fixed table, checked above and recomputed by the model).
    not_converted = sorted(set(state) - consumed - {"pos_embed", "decoder.decoder_pos_embed"})
    for nested in (TEACHER_ENCODER_KEY, TEACHER_HEAD_KEY):
        present = parts[_PARTS_KEY[nested]]
        if present is not None and model_type != "pretraining":
            not_converted.append(f"{nested} (nested dict, {len(present)} tensors)")
    if not_converted:
        hint = (
            " (use --model_type pretraining to keep them)"
            if model_type != "pretraining" and _has_family(state, PRETRAINING_KEYS)
            else ""
        )
        logger.warning("Not converted%s: %s", hint, describe_keys(not_converted, limit=20))
    if report.unexpected_keys:
        logger.warning("Unexpected keys: %s", describe_keys(report.unexpected_keys))

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    feature_extractor = MatpacFeatureExtractor.from_model_config(config)
    feature_extractor.save_pretrained(output_dir)
    card = model_card_for_conversion(
        model, checkpoint_path, parts, model_type, probe_path, license, hub_model_id, base_model
    )
    (output_dir / "README.md").write_text(card, encoding="utf-8")
    if parts["progress"]:
        write_training_progress(output_dir, parts["progress"], checkpoint_path)
    logger.info(
        "Saved %s (%d layers, width %d, %d heads, max_frames %d, %.1fM parameters) to %s",
        type(model).__name__,
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.max_frames,
        sum(p.numel() for p in model.parameters()) / 1e6,
        output_dir,
    )
    return model


TRAINING_PROGRESS_FILE = "training_progress.json"


def write_training_progress(output_dir: str | Path, progress: dict, checkpoint_path) -> Path:
    """`training_progress.json` beside the converted weights: the fairseq checkpoint's `num_updates` (and epoch), which
    `examples/run_pretraining.py --model_name_or_path` reads to continue the schedules from that step.

    The optimiser state is not carried: the official run trains in fp16, where fairseq's `FP16Optimizer` keeps Adam's
    moments over one flattened fp32 copy of every trainable parameter, in the order of the official module tree;
    splitting that vector back into our parameters depends on that order, which the checkpoint does not record. A
    continued run starts with zero moments, which fairseq Adam's bias correction handles (its first steps are
    normalised like every later one); the learning-rate warm-up then applies from the continued step."""
    path = Path(output_dir) / TRAINING_PROGRESS_FILE
    record = {key: progress[key] for key in ("num_updates", "epoch") if key in progress}
    record["source"] = Path(checkpoint_path).name
    record["optimizer_state"] = "not carried (see matpac_hf.convert_original_checkpoint.write_training_progress)"
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    logger.info("Wrote %s: %s", path, record)
    return path


def read_training_progress(folder: str | Path) -> dict:
    """The `training_progress.json` of a converted training checkpoint (`{}` when the folder has none)."""
    path = Path(folder) / TRAINING_PROGRESS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def convert_folder(
    name_or_path,
    output_dir: str | Path,
    model_type: str = "auto",
    num_attention_heads: int | None = None,
    problem_type: str | None = None,
    license: str | None = None,
    hub_model_id: str | None = None,
):
    """Converts a folder or Hub repository in the official inference layout (the authors' `auriankelen/matpac_*`
    repositories, whose weights sit under a wrapper prefix) into a matpac-hf folder: loaded with
    [`MatpacModel.from_pretrained`] / [`MatpacForAudioClassification.from_pretrained`] (which recognise the layout from
    the weights), then saved with our feature extractor and a model card. A folder that is not in that layout is
    refused."""
    files = weight_files(str(name_or_path), {})
    layout = find_official_layout(checkpoint_shapes(files)) if files else None
    if layout is None:
        raise CheckpointError(
            f"{name_or_path} is neither a file nor a folder / Hub repository in the official MATPAC inference layout "
            f"({'no weight file' if not files else 'its weights have no patch_embed.proj.* / student_encoder.*'})."
        )
    if model_type == "auto":
        model_type = "audio_classification" if layout.head_prefix is not None else "encoder"
    if model_type == "audio_classification" and layout.head_prefix is None:
        raise CheckpointError(f"--model_type audio_classification: {name_or_path} has no official AudioSet head.")
    model_class = MatpacForAudioClassification if model_type == "audio_classification" else MatpacModel
    extra = {"num_attention_heads": num_attention_heads} if num_attention_heads is not None else {}
    if problem_type is not None:
        extra["problem_type"] = problem_type
    model = model_class.from_pretrained(str(name_or_path), **extra).eval()
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    MatpacFeatureExtractor.from_model_config(model.config).save_pretrained(output_dir)
    raw = raw_config(str(name_or_path), {})
    local = Path(name_or_path).is_dir()
    parts = {"progress": {}, "hub_repository": None if local else str(name_or_path), "local_folder": local}
    card = model_card_for_conversion(
        model, Path(str(name_or_path).rstrip("/")), parts, model_type, None, license, hub_model_id, None
    )
    (output_dir / "README.md").write_text(card, encoding="utf-8")
    logger.info(
        "Saved %s from %s (%d layers, width %d, %d heads; its config.json fields %s not used: sizes come from the "
        "weights) to %s",
        type(model).__name__,
        name_or_path,
        model.config.num_hidden_layers,
        model.config.hidden_size,
        model.config.num_attention_heads,
        sorted(raw) or "(none)",
        output_dir,
    )
    return model


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Convert an official MATPAC / MATPAC++ checkpoint (.pt) into a Hugging Face folder "
        "(config.json, model.safetensors, preprocessor_config.json and the code files for trust_remote_code).",
    )
    parser.add_argument(
        "--checkpoint_path",
        required=True,
        help="Official .pt file (a released encoder, the AudioSet-fine-tuned model, or a fairseq training "
        "checkpoint), or a folder / Hub repository id in the official inference layout (the authors' "
        "auriankelen/matpac_* repositories).",
    )
    parser.add_argument("--output_dir", required=True, help="Folder to write (created if needed).")
    parser.add_argument(
        "--model_type",
        choices=MODEL_TYPES,
        default="auto",
        help="What to build. auto: MatpacForAudioClassification when the file has an AudioSet head or --probe_path "
        "is given, else MatpacModel (the student encoder). pretraining: the whole training state (student, teacher, "
        "predictor, classification heads, center) of a fairseq checkpoint as MatpacForPreTraining.",
    )
    parser.add_argument(
        "--probe_path",
        help="Official downstream probe (.pth with probe.weight/bias on the 3840-d "
        "clip embedding), converted with the encoder into MatpacForAudioClassification.",
    )
    parser.add_argument(
        "--label_file",
        help="Class names for id2label/label2id: one per line, JSON {index: name} "
        "or {name: index}, or CSV with a display_name column.",
    )
    parser.add_argument(
        "--label_sort_column",
        help="CSV only: sort the rows by this column before numbering them "
        "(the official AudioSet head numbers its classes by sorting by 'mid').",
    )
    parser.add_argument(
        "--problem_type",
        choices=CLASSIFIER_PROBLEM_TYPES,
        help="Classifier only: softmax "
        "(single-label) or sigmoid (multi-label) scores. Default: multi-label for the AudioSet head "
        "and for probes named after FSD50K, OpenMIC, MTG-Jamendo or MagnaTagATune, else single-label.",
    )
    parser.add_argument(
        "--num_mel_bins",
        type=int,
        default=NUM_MEL_BINS,
        help="Mel bands of the input (not visible in the weights; fixes the frequency patch rows). "
        f"Default {NUM_MEL_BINS}.",
    )
    parser.add_argument(
        "--num_attention_heads",
        type=int,
        help="Encoder heads (not visible in the weights). Default: the fairseq cfg's model.encoder.num_heads, else 12 "
        "for ViT-B's width 768; any other width without a cfg needs this option.",
    )
    parser.add_argument(
        "--decoder_num_attention_heads",
        type=int,
        help="Predictor heads for --model_type pretraining. Default: the fairseq cfg's "
        "model.decoder.decoder_num_heads, else 16 for the official width 512; any other width without a cfg needs "
        "this option.",
    )
    parser.add_argument(
        "--max_frames",
        type=int,
        help="Frames per encoder chunk. Default: read from the "
        "checkpoint's position table (608; 992 for the AudioSet-fine-tuned release).",
    )
    parser.add_argument(
        "--license",
        help="License identifier for the card's metadata. Default: apache-2.0, the licence the official repository "
        "states (README badge linking its LICENSE file); the card's notice says where the weights come from and what "
        "could not be verified (the weights are the authors', not under matpac-hf's MIT licence).",
    )
    parser.add_argument(
        "--hub_model_id",
        help="Hub repository the folder will be pushed to ('owner/name'): named in the card's usage snippets.",
    )
    parser.add_argument(
        "--base_model",
        help="Hub id of the converted encoder this probe sits on (the card's base_model), for --probe_path.",
    )
    parser.add_argument(
        "--trust_pickle",
        action="store_true",
        help="Load with torch.load(weights_only=False) when the file holds Python objects (this runs code from the "
        "file: only for files you trust).",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        convert_checkpoint(
            args.checkpoint_path,
            args.output_dir,
            model_type=args.model_type,
            probe_path=args.probe_path,
            label_file=args.label_file,
            label_sort_column=args.label_sort_column,
            num_mel_bins=args.num_mel_bins,
            num_attention_heads=args.num_attention_heads,
            decoder_num_attention_heads=args.decoder_num_attention_heads,
            max_frames=args.max_frames,
            trust_pickle=args.trust_pickle,
            problem_type=args.problem_type,
            license=args.license,
            hub_model_id=args.hub_model_id,
            base_model=args.base_model,
        )
    except (CheckpointError, ValueError) as error:
        logger.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
