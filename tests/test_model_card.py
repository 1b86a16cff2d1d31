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


def _bibtex_block(markdown: str) -> str:
    return markdown.split("```bibtex\n", 1)[1].split("```", 1)[0].strip()


def test_one_citation_in_the_cards_and_the_readme():
    """The citation block of every shipped template, as rendered, is the README's, and it names the paper (arXiv
    2502.12031, ICASSP 2025, the four authors)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    readme_bibtex = _bibtex_block(readme.split("## Citation", 1)[1])
    for template in ("pretrained_encoder", "audio_classification"):
        card = ModelCard(render_model_card(template))
        assert _bibtex_block(card.text.split("## Citation", 1)[1]) == readme_bibtex, template
    fields = dict(line.strip().rstrip(",").split(" = ", 1) for line in readme_bibtex.splitlines()[1:-1])
    fields = {key.strip(): value.strip("{}") for key, value in fields.items()}
    assert fields["eprint"] == "2502.12031" and fields["archivePrefix"] == "arXiv" and fields["year"] == "2025"
    assert fields["author"] == "Quelennec, Aurian and Chouteau, Pierre and Peeters, Geoffroy and Essid, Slim"


def test_eval_results_become_the_model_index():
    text = render_model_card(
        "audio_classification",
        repo_id="someone/matpac-esc50",
        eval_results=[
            dict(
                task_type="audio-classification",
                dataset_type="ashraq/esc50",
                dataset_name="ESC-50",
                dataset_split="test",
                metric_type="accuracy",
                metric_value=0.9375,
            )
        ],
    )
    assert "model-index:\n- name: someone/matpac-esc50\n" in text
    (result,) = ModelCard(text).data.eval_results
    assert (result.task_type, result.dataset_type, result.dataset_split) == (
        "audio-classification",
        "ashraq/esc50",
        "test",
    )
    assert (result.metric_type, result.metric_value) == ("accuracy", 0.9375)
    with pytest.raises(ValueError, match="not a set of huggingface_hub.EvalResult fields"):
        render_model_card("audio_classification", eval_results=[{"accuracy": 0.9}])


def test_local_paths_never_reach_the_card(tmp_path, caplog):
    local = tmp_path / "my-encoder"
    local.mkdir()
    with caplog.at_level("WARNING", logger="matpac_hf.model_card"):
        text = render_model_card(
            "audio_classification", base_model=str(local), datasets=["/data/esc50", "ashraq/esc50"]
        )
    data = ModelCard(text).data
    assert data.base_model is None and data.datasets == ["ashraq/esc50"]
    assert str(tmp_path) not in text and "/data/esc50" not in text
    assert "base_model=" in caplog.text and "is a local path or not a Hugging Face Hub id" in caplog.text


def test_weights_notice_names_the_source_and_the_terms():
    from matpac_hf.model_card import weights_notice

    notice = weights_notice("/home/someone/Downloads/matpac_10_2048.pt")
    assert "converted from `matpac_10_2048.pt`" in notice and "/home/someone" not in notice
    assert "https://github.com/aurianworld/matpac/releases" in notice and "https://github.com/nttcslab/m2d" in notice
    assert "not covered by matpac-hf's MIT licence" in notice
    assert "states the Apache License 2.0" in notice and "could not read that LICENSE file" in notice
    hub = weights_notice(hub_repository="auriankelen/matpac_music")
    assert "the authors' Hub repository `auriankelen/matpac_music`" in hub and "GitHub releases" not in hub


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
