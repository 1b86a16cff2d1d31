"""Model card templates render to cards whose metadata parses with huggingface_hub."""

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from matpac_hf.model_card import MATPAC_CITATION, TEMPLATES_DIR, render_model_card


def test_pretrained_encoder_card_metadata_and_body():
    text = render_model_card(
        "pretrained_encoder",
        repo_id="someone/matpac-vitb",
        license="mit",
        datasets="agkphysics/AudioSet",
        tags=["m2d", "audio"],
        training_hyperparameters={"learning_rate": 3e-4, "total_steps": 294816},
        evaluation_results="| ESC-50 acc | 93.0 |",
    )
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "feature-extraction"
    assert data["license"] == "mit"
    assert data["datasets"] == ["agkphysics/AudioSet"]
    assert data["tags"] == ["audio", "matpac", "self-supervised", "m2d"]  # base tags first, no duplicate
    assert 'AutoModel.from_pretrained("someone/matpac-vitb")' in card.text
    assert "| total_steps | 294816 |" in card.text and "| ESC-50 acc | 93.0 |" in card.text
    assert MATPAC_CITATION in card.text and "Quelennec, Aurian and Chouteau, Pierre" in card.text
    assert "eprint        = {2502.12031}" in card.text and "archivePrefix = {arXiv}" in card.text


def test_one_citation_in_the_cards_and_the_readme():
    assert "eprint        = {2502.12031}," in MATPAC_CITATION and "archivePrefix = {arXiv}" in MATPAC_CITATION
    assert "booktitle     = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)}," in (
        MATPAC_CITATION
    )
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    citation_section = readme.split("## Citation", 1)[1]
    bibtex = citation_section.split("```bibtex\n", 1)[1].split("```", 1)[0].strip()
    assert bibtex == MATPAC_CITATION


def test_audio_classification_card_metadata():
    text = render_model_card(
        "audio_classification.md",
        repo_id="someone/matpac-esc50",
        base_model="someone/matpac-vitb",
        datasets=["ashraq/esc50"],
        metrics=["accuracy"],
        labels=["dog", "rain"],
        num_labels=2,
    )
    data = ModelCard(text).data
    assert data.pipeline_tag == "audio-classification"
    assert data.base_model == "someone/matpac-vitb"
    assert data.metrics == ["accuracy"] and data.datasets == ["ashraq/esc50"]
    assert data.license == "other"  # no license given: "other", never a guess
    assert "over 2 classes" in ModelCard(text).text and "dog, rain" in ModelCard(text).text


def test_templates_are_shipped_in_the_package():
    assert sorted(p.name for p in TEMPLATES_DIR.glob("*.md")) == ["audio_classification.md", "pretrained_encoder.md"]


def test_unknown_template_or_field_raises():
    with pytest.raises(ValueError, match="Unknown model card template"):
        render_model_card("no_such_template")
    with pytest.raises(ValueError, match="typo_field"):
        render_model_card("pretrained_encoder", typo_field=1)


def test_custom_template_path_needs_pipeline_tag(tmp_path):
    template = tmp_path / "card.md"
    template.write_text("---\n{{ card_data }}\n---\n# {{ title }}\n")
    with pytest.raises(ValueError, match="pipeline_tag"):
        render_model_card(template, title="x")
    card = ModelCard(render_model_card(template, title="Hello", pipeline_tag="feature-extraction"))
    assert card.data.pipeline_tag == "feature-extraction" and card.text.strip() == "# Hello"


def test_pretraining_objective_gives_the_config_numbers():
    from matpac_hf import MatpacConfig
    from matpac_hf.model_card import pretraining_objective

    official = pretraining_objective(MatpacConfig())
    for fact in (
        "Objective (MATPAC)",
        "190 patches of 16 x 16",
        "sees 57 patches",
        "the other 133",
        "0.04 -> 0.07 over 9827 steps",
        "averaging the teacher probabilities (official)",
        "independent random draw (official)",
        "over 294816 steps: 0.99995 -> 0.99999 (encoder), 0.998 -> 1.0",
    ):
        assert fact in official, fact
    assert "winner-takes-all" not in official
    short = pretraining_objective(
        MatpacConfig(
            use_mcl=True,
            max_frames=128,
            total_steps=300,
            ema_decay_start=0.99,
            ema_decay_end=0.999,
            center_update="logits",
            teacher_init="copy_student",
        )
    )
    for fact in (
        "Objective (MATPAC++)",
        "40 patches",
        "sees 12 patches",
        "over 300 steps: 0.99 -> 0.999 (encoder)",
        "teacher logits (DINO)",
        "copies of the student",
        "5 heads",
        "T = 0.1 x 0.99997^step",
    ):
        assert fact in short, fact
    card = render_model_card("pretrained_encoder", objective=short)
    assert short in card and "official settings" not in card
    assert "Objective (MATPAC, official settings)" in render_model_card("pretrained_encoder")
