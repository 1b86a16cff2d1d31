# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Model cards (Hub README.md) for MATPAC checkpoints, rendered from the Jinja2 templates in the repo's `model_cards/`
(shipped in the package as `matpac_hf/model_cards`, a link to that folder).

```python
>>> from matpac_hf.model_card import render_model_card
>>> text = render_model_card(
...     "pretrained_encoder", repo_id="me/matpac-vitb", license="mit", datasets="agkphysics/AudioSet"
... )
>>> (folder / "README.md").write_text(text)  # push_to_hub / upload_folder then publishes it
```

Metadata (the card's YAML header) is built here with `huggingface_hub.ModelCardData`: `library_name: transformers`,
the template's `pipeline_tag`, `license`, `base_model`, `datasets`, `metrics`, `language`, `model_name`, `tags`
(always including `audio`, `matpac`, `self-supervised`) and, from `eval_results`, a `model-index` (the Hub's
evaluation results). `base_model` and `datasets` must be Hub ids: a local path is left out, with a warning (a card
never names the machine it was written on). Every other keyword fills a variable of the template; a keyword that is
neither metadata nor used by the template raises a `ValueError` (nothing is silently dropped).
"""

import logging
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id


logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "model_cards"

MATPAC_CITATION = """@inproceedings{quelennec2025matpac,
  title         = {Masked Latent Prediction and Classification for Self-Supervised Audio Representation Learning},
  author        = {Quelennec, Aurian and Chouteau, Pierre and Peeters, Geoffroy and Essid, Slim},
  booktitle     = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year          = {2025},
  eprint        = {2502.12031},
  archivePrefix = {arXiv}
}"""

BASE_TAGS = ("audio", "matpac", "self-supervised")

# pipeline_tag of each shipped template (a template given by path needs `pipeline_tag=...`)
TEMPLATE_PIPELINE_TAGS = {
    "pretrained_encoder": "feature-extraction",
    "audio_classification": "audio-classification",
}

# keywords that go to the YAML metadata (ModelCardData); they are visible to the template as well
METADATA_FIELDS = (
    "license",
    "license_name",
    "license_link",
    "base_model",
    "datasets",
    "metrics",
    "language",
    "model_name",
    "tags",
    "pipeline_tag",
    "library_name",
    "eval_results",
)

# Where the official MATPAC / MATPAC++ weights are published, and the terms that apply to them (see `weights_notice`).
OFFICIAL_REPOSITORY = "https://github.com/aurianworld/matpac"
OFFICIAL_RELEASES = OFFICIAL_REPOSITORY + "/releases"
M2D_REPOSITORY = "https://github.com/nttcslab/m2d"


def _template_path(template_name_or_path: str | Path) -> tuple[Path, str | None]:
    """Resolves a shipped template name (`"pretrained_encoder"`, with or without `.md`) or a file path."""
    name = str(template_name_or_path)
    stem = name[:-3] if name.endswith(".md") else name
    if stem in TEMPLATE_PIPELINE_TAGS:
        return TEMPLATES_DIR / f"{stem}.md", TEMPLATE_PIPELINE_TAGS[stem]
    path = Path(name)
    if path.is_file():
        return path, None
    raise ValueError(
        f"Unknown model card template {name!r}: give one of {sorted(TEMPLATE_PIPELINE_TAGS)} or the path of a "
        "Jinja2 markdown file whose YAML header is `{{ card_data }}`."
    )


def template_fields(template_name_or_path: str | Path) -> set[str]:
    """The variables a template uses (besides `card_data` and `citation`, which the renderer fills)."""
    import jinja2
    from jinja2 import meta

    path, _ = _template_path(template_name_or_path)
    parsed = jinja2.Environment().parse(path.read_text(encoding="utf-8"))
    return meta.find_undeclared_variables(parsed) - {"card_data", "citation"}


def _as_list(value) -> list | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _hub_id(field: str, value: str) -> str | None:
    """`value` if it is a Hub repository id; `None`, with a warning, for a local path or anything else (a card never
    names the machine it was written on; a crash here would lose the card at the end of a run)."""
    try:
        validate_repo_id(value)
        is_id = not Path(value).expanduser().exists()
    except HFValidationError:
        is_id = False
    if not is_id:
        logger.warning(
            "Model card: %s=%r is a local path or not a Hugging Face Hub id ('owner/name'), so the card leaves it out; "
            "pass the Hub id it is published under to name it.",
            field,
            value,
        )
        return None
    return value


def _eval_results(results) -> list[EvalResult] | None:
    """`EvalResult`s from `EvalResult` objects or dicts of its fields (`task_type`, `dataset_type`, `dataset_name`,
    `metric_type`, `metric_value`, optional `dataset_split`, `metric_name`, ...)."""
    if not results:
        return None
    converted = []
    for result in results:
        if isinstance(result, dict):
            try:
                result = EvalResult(**result)
            except TypeError as error:
                raise ValueError(
                    f"eval_results entry {result} is not a set of huggingface_hub.EvalResult fields ({error}); "
                    "give task_type, dataset_type, dataset_name, metric_type and metric_value."
                ) from error
        if not isinstance(result, EvalResult):
            raise ValueError(f"eval_results entries must be dicts or huggingface_hub.EvalResult, got {result!r}.")
        converted.append(result)
    return converted


# The licence the official repository states (README badge "License: Apache 2.0", linking its LICENSE file); the
# LICENSE file's text and the Hub repositories' card metadata were not readable from matpac-hf's sources.
OFFICIAL_LICENSE = "apache-2.0"


def weights_notice(source_file: str | None = None, hub_repository: str | None = None) -> str:
    """The card's licence paragraph for weights converted from the authors' files or Hub repositories."""
    if hub_repository:
        origin = f"converted from the authors' Hub repository `{hub_repository}`"
    elif source_file:
        origin = f"converted from `{Path(source_file).name}` as published in the GitHub releases of the official repository ({OFFICIAL_RELEASES})"
    else:
        origin = f"as published by the official repository ({OFFICIAL_REPOSITORY})"
    return (
        f"These weights are the MATPAC authors' (Quelennec et al.), {origin}. They are not covered by matpac-hf's MIT "
        f"licence, which applies to matpac-hf's code only. The official repository ({OFFICIAL_REPOSITORY}) states the "
        "Apache License 2.0 (its README's licence badge, linking its LICENSE file), hence this card's `license`; "
        "matpac-hf could not read that LICENSE file itself nor the licence field of the authors' Hub cards, so check "
        "both before redistributing. The official code builds on M2D "
        f"({M2D_REPOSITORY}), which NTT releases under its own licence (its LICENSE.pdf)."
    )


def render_model_card(template_name_or_path: str | Path, **fields) -> str:
    """Renders a model card (the text of a Hub `README.md`).

    Args:
        template_name_or_path: `"pretrained_encoder"`, `"audio_classification"` or the path of a template file.
        fields: metadata (`license` (default `"other"`), `license_name`, `license_link`, `base_model` (a Hub id),
            `datasets` (Hub ids), `metrics`, `language`, `model_name`, extra `tags`, `pipeline_tag` to override the
            template's, `library_name` (default `"transformers"`), `eval_results` (a list of
            `huggingface_hub.EvalResult` or dicts of its fields: the card's `model-index`)) and template variables
            (see [`template_fields`]), e.g. `repo_id`, `model_summary`, `training_summary`, `training_hyperparameters` (a dict), `evaluation_results`
            (markdown), `labels` (a list), `license_note`.

    Returns:
        The card as a string: YAML metadata between `---` lines, then the markdown body.
    """
    path, default_pipeline_tag = _template_path(template_name_or_path)
    unknown = set(fields) - set(METADATA_FIELDS) - template_fields(path)
    if unknown:
        raise ValueError(
            f"Field(s) {sorted(unknown)} are neither card metadata {list(METADATA_FIELDS)} nor used by the template "
            f"{path.name} (it uses {sorted(template_fields(path))}); remove them or use a template that shows them."
        )
    pipeline_tag = fields.get("pipeline_tag") or default_pipeline_tag
    if pipeline_tag is None:
        raise ValueError(f"Template {path} is not a shipped one: pass pipeline_tag=... (e.g. 'feature-extraction').")
    tags = list(BASE_TAGS) + [tag for tag in _as_list(fields.get("tags")) or [] if tag not in BASE_TAGS]
    base_model = fields.get("base_model")
    datasets = [name for name in _as_list(fields.get("datasets")) or [] if _hub_id("datasets", name)] or None
    eval_results = _eval_results(fields.get("eval_results"))
    model_name = fields.get("model_name")
    if eval_results and not model_name:  # the model-index needs a name
        model_name = fields.get("repo_id") or path.stem.replace("_", " ")
    card_data = ModelCardData(
        library_name=fields.get("library_name", "transformers"),
        pipeline_tag=pipeline_tag,
        license=fields.get("license", "other"),
        license_name=fields.get("license_name"),
        license_link=fields.get("license_link"),
        base_model=_hub_id("base_model", base_model) if base_model else None,
        datasets=datasets,
        metrics=_as_list(fields.get("metrics")),
        language=fields.get("language"),
        model_name=model_name,
        eval_results=eval_results,
        tags=tags,
    )
    template_kwargs = {key: value for key, value in fields.items() if key not in METADATA_FIELDS}
    card = ModelCard.from_template(
        card_data, template_str=path.read_text(encoding="utf-8"), citation=MATPAC_CITATION, **template_kwargs
    )
    return str(card)


def pretraining_objective(config, crop_frames: int | None = None) -> str:
    """The "Objective" paragraph of a pretrained-encoder card, with the numbers of `config` (a `MatpacConfig`) rather
    than the official ones: the `tiny` preset, say, anneals other EMA decays over another number of steps.
    `crop_frames`: the pretraining crop when shorter than `config.max_frames` (`run_pretraining.py --crop_frames`)."""
    crop_frames = crop_frames or config.max_frames
    num_patches = config.num_frequency_patches * (crop_frames // config.patch_size)
    visible = int(num_patches * (1 - config.mask_ratio))
    patch = config.patch_size
    center = "teacher probabilities (official)" if config.center_update == "probabilities" else "teacher logits (DINO)"
    independent = config.teacher_init == "independent"
    start = "an independent random draw (official)" if independent else "copies of the student"
    if config.teacher_temperature_warmup_steps > 0:
        teacher_temperature = (
            f"a temperature rising {config.teacher_temperature_start} -> {config.teacher_temperature_end} over "
            f"{config.teacher_temperature_warmup_steps} steps"
        )
    else:
        teacher_temperature = f"a constant temperature {config.teacher_temperature_end} (no warm-up)"
    text = (
        f"**Objective ({'MATPAC++' if config.use_mcl else 'MATPAC'}).** Each {crop_frames}-frame crop "
        f"({num_patches} patches of {patch} x {patch}) is masked at random per sample: the student encoder sees "
        f"{visible} patches plus a CLS token. A predictor ({config.decoder_num_hidden_layers} blocks, width "
        f"{config.decoder_hidden_size}) fills in the other {num_patches - visible} and projects them back to "
        f"{config.hidden_size}-d; the EMA teacher encoder sees exactly those masked patches, and the prediction loss "
        f"is 2 - 2 cos between prediction and teacher latent. A DINO-style classification head (MLP "
        f"{config.hidden_size}-{config.head_hidden_size}-{config.head_hidden_size}-{config.head_bottleneck_size}, "
        f"L2 norm, weight-normalised {config.head_bottleneck_size} -> {config.head_num_prototypes} prototypes) on the "
        f"predictions is trained against an EMA teacher head on the teacher latents: teacher softmax of centred "
        f"logits at {teacher_temperature}, student temperature {config.student_temperature}, a center "
        f"(momentum {config.center_momentum}) averaging the {center}. The loss is {config.prediction_loss_weight} x "
        f"prediction + {config.classification_loss_weight} x classification. Both teachers start as {start}; their "
        f"EMA decays are annealed linearly over {config.total_steps} steps: {config.ema_decay_start} -> "
        f"{config.ema_decay_end} (encoder), {config.head_ema_decay_start} -> {config.head_ema_decay_end} (head)."
    )
    if config.use_mcl:
        text += (
            f" The predictor's output projection is replaced by {config.mcl_num_heads} heads trained by soft "
            f"winner-takes-all (weights softmax(-loss / T), T = {config.mcl_temperature_start} x "
            f"{config.mcl_temperature_decay}^step), the hard minimum once T < {config.mcl_temperature_min}; the best "
            "head's prediction feeds the classification head."
        )
    return text


def pretrained_encoder_fields(
    config, hyperparameters: dict, corpus: str, global_step: int, crop_frames: int, monitors: dict | None = None
) -> dict:
    """The fields of a `pretrained_encoder` card that a pretraining run of `examples/run_pretraining.py` determines:
    its summary (steps, batch, crop, `corpus` as the card names it, final `monitors`), hyperparameters, objective,
    architecture and tags. The caller adds `license`, `datasets`, `base_model`, `repo_id`."""
    crop_seconds = crop_frames * config.hop_length / config.sampling_rate
    summary = (
        f"Pretrained with `examples/run_pretraining.py` of matpac-hf for {global_step} optimiser steps of "
        f"{hyperparameters['total_batch_size']} random {crop_seconds:.2f} s crops on {corpus}."
    )
    if monitors:
        summary += " Final monitors: " + ", ".join(f"{k} {v:.4g}" for k, v in monitors.items()) + "."
    size = config.frame_embedding_size
    fields = {
        "training_summary": summary,
        "training_hyperparameters": hyperparameters,
        "objective": pretraining_objective(config, crop_frames=crop_frames),
        "architecture": f"{config.num_hidden_layers} blocks, width {config.hidden_size}, "
        f"{config.num_attention_heads} heads",
        "embedding_size": size,
        "model_summary": f"A self-supervised audio encoder pretrained with {'MATPAC++' if config.use_mcl else 'MATPAC'} "
        f"(Masked latent Prediction And Classification, ICASSP 2025): a ViT that turns 16 kHz audio into one {size}-d "
        f"frame embedding per 160 ms and a {size}-d clip embedding.",
    }
    if config.use_mcl:
        fields["tags"] = ["matpac++"]
    return fields


__all__ = [
    "render_model_card",
    "pretrained_encoder_fields",
    "pretraining_objective",
    "template_fields",
    "weights_notice",
    "MATPAC_CITATION",
    "TEMPLATES_DIR",
    "OFFICIAL_LICENSE",
    "OFFICIAL_REPOSITORY",
    "OFFICIAL_RELEASES",
]
