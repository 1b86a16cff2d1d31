"""Auto classes, AutoProcessor, pipelines and remote code on saved folders: with matpac_hf installed (in this process:
local classes, no `trust_remote_code`, no prompt) and without it (one fresh process that blocks `import matpac_hf`:
the copied code files, `trust_remote_code=True`), giving the same numbers as the in-process model.

Two folders: the model's (`model.save_pretrained`: weights, config with `auto_map`, the model's code files) and the
pipeline's (`pipeline(...).save_pretrained`, transformers' custom-pipeline mechanism: the same plus the pipeline's code
files and `custom_pipelines`)."""

import builtins
import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
import torch
from matpac_testing import tiny_config
from transformers import AutoConfig, AutoFeatureExtractor, AutoProcessor, pipeline

import matpac_hf
from matpac_hf import AudioFeatureExtractionPipeline, MatpacFeatureExtractor, MatpacForAudioClassification, MatpacModel
from matpac_hf.configuration_matpac import AUTO_MAP


MODEL_AUTO_CLASSES = {auto: reference.split(".")[1] for auto, reference in AUTO_MAP.items() if auto != "AutoConfig"}
CODE_FILES = {"configuration_matpac.py", "modeling_matpac.py", "feature_extraction_matpac.py"}
PIPELINE_CODE_FILES = {"pipelines.py", "audio_io.py", "hear.py"}  # pipelines.py and the files it imports
TASK = "audio-feature-extraction"

# Runs in a fresh interpreter where `import matpac_hf` fails: loads `folder` with AutoConfig, AutoFeatureExtractor,
# AutoProcessor and every model Auto class of its auto_map, and `pipeline(model=pipeline_folder)` (the task comes from
# that folder's custom_pipelines), all through the folders' code files; saves the encoder again to `again/model` and
# the pipeline to `again/pipeline`; writes the outputs on `audio.npy` to out_remote.npz.
REMOTE_LOADER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import torch
    folder, pipeline_folder, again = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.modules["matpac_hf"] = None  # as if the package were not installed
    try:
        import matpac_hf  # noqa: F401
        raise SystemExit("matpac_hf is importable: the remote-code check would prove nothing")
    except ImportError:
        pass
    import transformers
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
    feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    processor = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    audio = list(np.load(folder + "/audio.npy", allow_pickle=True))
    inputs = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
    report = {
        "config": type(config).__module__,
        "feature_extractor": type(feature_extractor).__module__,
        "processor": type(processor).__module__ + "." + type(processor).__name__,
    }
    arrays = {"input_values": inputs["input_values"].numpy()}
    for auto_name in config.auto_map:
        if not auto_name.startswith("AutoModel"):
            continue
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
        report[auto_name] = type(model).__module__ + "." + type(model).__name__
        if auto_name == "AutoModel":
            with torch.no_grad():
                outputs = model(**inputs)
            arrays["pooler_output"] = outputs.pooler_output.numpy()
            arrays["last_hidden_state"] = outputs.last_hidden_state.numpy()
            model.save_pretrained(os.path.join(again, "model"))
    extractor = transformers.pipeline(model=pipeline_folder, trust_remote_code=True)
    report["pipeline"] = type(extractor).__module__ + "." + type(extractor).__name__
    arrays["pipeline_clip_embedding"] = extractor(audio[0])["clip_embedding"]
    extractor.save_pretrained(os.path.join(again, "pipeline"))
    np.savez(folder + "/out_remote.npz", **arrays)
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("auto")
    model = MatpacModel(tiny_config()).eval()
    model.save_pretrained(folder)
    feature_extractor = MatpacFeatureExtractor()
    feature_extractor.save_pretrained(folder)
    rng = np.random.default_rng(0)
    audio = [0.3 * rng.standard_normal(n).astype(np.float32) for n in (16000, 7000, 400)]
    np.save(folder / "audio.npy", np.array(audio, dtype=object), allow_pickle=True)
    inputs = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    return folder, audio, inputs, outputs


@pytest.fixture(scope="module")
def pipeline_folder(saved, tmp_path_factory):
    """The same model and feature extractor saved through the pipeline (`Pipeline.save_pretrained`)."""
    folder = tmp_path_factory.mktemp("pipeline")
    model = MatpacModel.from_pretrained(saved[0]).eval()
    pipeline(TASK, model=model, feature_extractor=MatpacFeatureExtractor.from_pretrained(saved[0])).save_pretrained(
        folder
    )
    return folder


@pytest.fixture(scope="module")
def remote(saved, pipeline_folder, tmp_path_factory):
    """The fresh remote-code process, run once for the module: `(report, arrays, folder saved again)`."""
    folder = saved[0]
    work = tmp_path_factory.mktemp("remote")
    script = work / "loader.py"
    script.write_text(REMOTE_LOADER)
    env = dict(os.environ, HF_MODULES_CACHE=str(work / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    # run from `work` so that a source checkout's `src` is not on the path; the venv's editable install is the only
    # way to matpac_hf, and the loader blocks it.
    result = subprocess.run(
        [sys.executable, str(script), str(folder), str(pipeline_folder), str(work / "again")],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    return report, np.load(folder / "out_remote.npz"), work / "again"


def test_saved_folder_carries_code_and_auto_map(saved):
    folder = saved[0]
    files = {path.name for path in folder.iterdir()}
    assert CODE_FILES | {"fast_inference.py"} <= files  # and the files modeling_matpac.py imports
    assert not PIPELINE_CODE_FILES & files  # the pipeline's code comes with the pipeline's save_pretrained
    config = json.loads((folder / "config.json").read_text())
    expected = {"AutoConfig": "configuration_matpac.MatpacConfig"}
    expected.update({auto: f"modeling_matpac.{name}" for auto, name in MODEL_AUTO_CLASSES.items()})
    assert config["auto_map"] == expected
    assert {"AutoModel", "AutoModelForAudioClassification", "AutoModelForAudioFrameClassification"} <= set(expected)
    assert "custom_pipelines" not in config
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_matpac.MatpacFeatureExtractor"}


def test_pipeline_folder_carries_the_pipeline_code_and_custom_pipelines(saved, pipeline_folder):
    files = {path.name for path in pipeline_folder.iterdir()}
    assert CODE_FILES | PIPELINE_CODE_FILES <= files
    config = json.loads((pipeline_folder / "config.json").read_text())
    assert config["custom_pipelines"] == {
        TASK: {"impl": "pipelines.AudioFeatureExtractionPipeline", "pt": ["AutoModel"], "type": "audio"}
    }
    assert config["auto_map"] == json.loads((saved[0] / "config.json").read_text())["auto_map"]


def test_every_model_class_saves_the_full_auto_map(tmp_path):
    """Saving the classifier (not only the encoder) also lists every Auto class."""
    MatpacForAudioClassification(tiny_config(num_labels=3)).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", *MODEL_AUTO_CLASSES}


def test_installed_package_loads_local_classes_without_trust_or_prompt(saved):
    """With matpac_hf imported: every Auto class, AutoProcessor (-> the feature extractor) and
    `pipeline(TASK, model=folder)` resolve to the local classes without `trust_remote_code` and without asking
    (before, AutoProcessor tried AutoImageProcessor first, which asked whether to trust the folder's code, and the
    folder's custom_pipelines made `pipeline()` demand trust_remote_code)."""
    folder, audio, inputs, outputs = saved
    with mock.patch.object(builtins, "input", side_effect=AssertionError("asked to trust remote code")) as asked:
        config = AutoConfig.from_pretrained(folder)
        assert type(config) is matpac_hf.MatpacConfig
        assert type(AutoFeatureExtractor.from_pretrained(folder)) is MatpacFeatureExtractor
        assert type(AutoProcessor.from_pretrained(folder)) is MatpacFeatureExtractor
        for auto_name, class_name in MODEL_AUTO_CLASSES.items():
            import transformers

            model = getattr(transformers, auto_name).from_pretrained(folder)
            assert type(model) is getattr(matpac_hf, class_name)
        extractor = pipeline(TASK, model=str(folder))
    assert not asked.called
    assert type(extractor) is matpac_hf.AudioFeatureExtractionPipeline
    clip_embedding = extractor(audio[0])["clip_embedding"]
    np.testing.assert_allclose(clip_embedding, outputs.pooler_output[0].numpy(), atol=1e-5, rtol=0)


def test_installed_package_serves_a_pipeline_folder_with_pipeline_class(saved, pipeline_folder):
    """A folder that lists `custom_pipelines` makes transformers' `pipeline()` ask for `trust_remote_code` (its rule
    for every such folder); with matpac_hf installed, `pipeline_class=` runs the installed pipeline without it."""
    _, audio, _, outputs = saved
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline(TASK, model=str(pipeline_folder))
    with mock.patch.object(builtins, "input", side_effect=AssertionError("asked to trust remote code")):
        extractor = pipeline(TASK, model=str(pipeline_folder), pipeline_class=AudioFeatureExtractionPipeline)
    assert type(extractor) is AudioFeatureExtractionPipeline and type(extractor.model) is MatpacModel
    clip_embedding = extractor(audio[0])["clip_embedding"]
    np.testing.assert_allclose(clip_embedding, outputs.pooler_output[0].numpy(), atol=1e-5, rtol=0)


def test_remote_code_loads_every_class_and_the_pipeline(saved, remote):
    folder, audio, inputs, outputs = saved
    report, arrays, _ = remote
    assert report["config"].startswith("transformers_modules.")
    assert report["feature_extractor"].startswith("transformers_modules.")
    assert report["processor"].startswith("transformers_modules.") and report["processor"].endswith(
        ".MatpacFeatureExtractor"
    )
    for auto_name, class_name in MODEL_AUTO_CLASSES.items():
        assert report[auto_name].startswith("transformers_modules.") and report[auto_name].endswith("." + class_name)
    assert report["pipeline"].startswith("transformers_modules.")
    assert report["pipeline"].endswith(".AudioFeatureExtractionPipeline")

    np.testing.assert_allclose(arrays["input_values"], inputs["input_values"].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(arrays["last_hidden_state"], outputs.last_hidden_state.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(arrays["pooler_output"], outputs.pooler_output.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(arrays["pipeline_clip_embedding"], outputs.pooler_output[0].numpy(), atol=1e-5, rtol=0)


def test_remote_code_folders_saved_again_stay_loadable(saved, remote):
    """A model loaded through remote code and saved again carries its code files and auto_map on; a pipeline loaded
    through remote code and saved again also carries its code and custom_pipelines on."""
    _, _, inputs, outputs = saved
    again = remote[2]
    for folder, pipeline_files in ((again / "model", set()), (again / "pipeline", PIPELINE_CODE_FILES)):
        files = {p.name for p in folder.iterdir()}
        assert CODE_FILES - {"feature_extraction_matpac.py"} | pipeline_files <= files
        config = json.loads((folder / "config.json").read_text())
        assert set(config["auto_map"]) == {"AutoConfig", *MODEL_AUTO_CLASSES}
        assert set(config.get("custom_pipelines", {})) == ({TASK} if pipeline_files else set())
        reloaded = MatpacModel.from_pretrained(folder).eval()
        with torch.no_grad():
            pooled = reloaded(**inputs).pooler_output
        assert (pooled - outputs.pooler_output).abs().max() < 1e-5
