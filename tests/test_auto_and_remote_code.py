"""Auto classes and remote code: a saved folder loads with the Auto classes, with matpac_hf installed (local classes,
no trust_remote_code) and without it (the copied code files, trust_remote_code=True), each in a fresh process, and
gives the same numbers as the in-process model."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacForAudioClassification, MatpacModel, modeling_matpac


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_frames=64)
MODEL_AUTO_CLASSES = {
    auto: name for name, auto in modeling_matpac.AUTO_CLASS_OF_MODEL_CLASS.items() if hasattr(modeling_matpac, name)
}

# Runs in a fresh interpreter: loads `folder` with every Auto class and writes the outputs on `audio.npy` to out.npz.
LOADER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    folder, mode = sys.argv[1], sys.argv[2]
    if mode == "remote":
        sys.modules["matpac_hf"] = None  # as if the package were not installed
        try:
            import matpac_hf  # noqa: F401
            raise SystemExit("matpac_hf is importable: the remote-code check would prove nothing")
        except ImportError:
            pass
    else:
        import matpac_hf  # noqa: F401  (registers the local classes)
    import transformers
    kwargs = {"trust_remote_code": True} if mode == "remote" else {}
    config = transformers.AutoConfig.from_pretrained(folder, **kwargs)
    feature_extractor = transformers.AutoFeatureExtractor.from_pretrained(folder, **kwargs)
    audio = list(np.load(folder + "/audio.npy", allow_pickle=True))
    inputs = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
    report = {"config": type(config).__module__, "feature_extractor": type(feature_extractor).__module__}
    arrays = {"input_values": inputs["input_values"].numpy()}
    for auto_name in config.auto_map:
        if not auto_name.startswith("AutoModel"):
            continue
        model = getattr(transformers, auto_name).from_pretrained(folder, **kwargs).eval()
        torch.manual_seed(0)
        with torch.no_grad():
            outputs = model(**inputs) if auto_name != "AutoModelForPreTraining" else None
        report[auto_name] = type(model).__module__ + "." + type(model).__name__
        if auto_name == "AutoModel":
            arrays["pooler_output"] = outputs.pooler_output.numpy()
            arrays["last_hidden_state"] = outputs.last_hidden_state.numpy()
        elif auto_name == "AutoModelForAudioClassification":
            arrays["logits"] = outputs.logits.numpy()
    np.savez(folder + "/out_" + mode + ".npz", **arrays)
    print("REPORT" + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("auto")
    model = MatpacModel(MatpacConfig(**TINY)).eval()
    model.save_pretrained(folder)
    feature_extractor = MatpacFeatureExtractor()
    feature_extractor.save_pretrained(folder)
    rng = np.random.default_rng(0)
    audio = [0.3 * rng.standard_normal(n).astype(np.float32) for n in (16000, 7000, 400)]
    np.save(folder / "audio.npy", np.array(audio, dtype=object), allow_pickle=True)
    inputs = feature_extractor(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    return folder, inputs, outputs


def run_loader(folder, mode, tmp_path):
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    script = tmp_path / "loader.py"
    script.write_text(LOADER)
    # run from tmp_path so that a source checkout's `src` is not on the path; the venv's editable install is the
    # only way to matpac_hf, and "remote" mode blocks it.
    result = subprocess.run(
        [sys.executable, str(script), str(folder), mode],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    return report, np.load(folder / f"out_{mode}.npz")


def test_saved_folder_carries_code_and_auto_map(saved):
    folder, _, _ = saved
    files = {path.name for path in folder.iterdir()}
    assert {"configuration_matpac.py", "modeling_matpac.py", "feature_extraction_matpac.py"} <= files
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    expected = {"AutoConfig": "configuration_matpac.MatpacConfig"}
    expected.update({auto: f"modeling_matpac.{name}" for auto, name in MODEL_AUTO_CLASSES.items()})
    assert auto_map == expected
    assert {"AutoModel", "AutoModelForAudioClassification"} <= set(auto_map)
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"] == {"AutoFeatureExtractor": "feature_extraction_matpac.MatpacFeatureExtractor"}


def test_every_model_class_saves_the_full_auto_map(tmp_path):
    """Saving the classifier (not only the encoder) also lists every Auto class."""
    model = MatpacForAudioClassification(MatpacConfig(**TINY, num_labels=3))
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", *MODEL_AUTO_CLASSES}


@pytest.mark.parametrize("mode", ["installed", "remote"])
def test_fresh_process_loads_with_auto_classes(saved, tmp_path, mode):
    folder, inputs, outputs = saved
    report, arrays = run_loader(folder, mode, tmp_path)

    code_origin = "matpac_hf." if mode == "installed" else "transformers_modules."
    assert report["config"].startswith(code_origin)
    assert report["feature_extractor"].startswith(code_origin)
    for auto_name, class_name in MODEL_AUTO_CLASSES.items():
        assert report[auto_name].startswith(code_origin) and report[auto_name].endswith("." + class_name)

    np.testing.assert_allclose(arrays["input_values"], inputs["input_values"].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(arrays["last_hidden_state"], outputs.last_hidden_state.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(arrays["pooler_output"], outputs.pooler_output.numpy(), atol=1e-5, rtol=0)
    assert arrays["logits"].shape == (3, 2)  # a new (random) classifier on the saved encoder


def test_remote_code_folder_saved_again_stays_loadable(saved, tmp_path):
    """A model loaded through remote code and saved again carries the code files and the auto_map on."""
    folder, inputs, outputs = saved
    script = tmp_path / "resave.py"
    script.write_text(
        textwrap.dedent(
            f"""
        import sys
        sys.modules["matpac_hf"] = None
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
        model.save_pretrained({str(tmp_path / "again")!r})
        """
        )
    )
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    again = tmp_path / "again"
    assert {"configuration_matpac.py", "modeling_matpac.py"} <= {path.name for path in again.iterdir()}
    assert set(json.loads((again / "config.json").read_text())["auto_map"]) == {"AutoConfig", *MODEL_AUTO_CLASSES}
    reloaded = MatpacModel.from_pretrained(again).eval()
    with torch.no_grad():
        pooled = reloaded(**inputs).pooler_output
    assert (pooled - outputs.pooler_output).abs().max() < 1e-5
