"""push_to_hub / from_pretrained end to end against the local Hub stub (tests/hub_stub.py), in subprocesses.

huggingface_hub reads HF_ENDPOINT at import time, so every Hub call runs in a fresh subprocess that inherits the
environment set by the `hub_stub` fixture: one pushes and downloads with matpac_hf installed, one loads with remote
code only (matpac_hf blocked).
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import ModelCard


REPO_ID = "stub-user/tiny-matpac"

PUSH_SCRIPT = """
import sys
import numpy as np
import torch
import matpac_hf
from huggingface_hub import HfApi
from matpac_hf import MatpacFeatureExtractor, MatpacModel
from matpac_hf.model_card import render_model_card
sys.path.insert(0, "{tests_dir}")
from conftest import tiny_config

torch.manual_seed(0)
model = MatpacModel(tiny_config()).eval()
feature_extractor = MatpacFeatureExtractor()
model.push_to_hub("{repo}")
feature_extractor.push_to_hub("{repo}")
card = render_model_card("pretrained_encoder", repo_id="{repo}", license="mit", datasets=["agkphysics/AudioSet"])
HfApi().upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id="{repo}")

audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 12000)).astype(np.float32)
with torch.no_grad():
    outputs = model(**feature_extractor(list(audio), sampling_rate=16000, return_tensors="pt"))
np.savez("{reference}", audio=audio, pooled=outputs.pooler_output.numpy(), frames=outputs.last_hidden_state.numpy())
print("PUSHED")
"""

LOAD_SCRIPT = """
import sys
if {block_package}:
    sys.modules["matpac_hf"] = None  # `import matpac_hf` now raises ImportError: only the Hub's code can be used
import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel
if not {block_package}:
    import matpac_hf  # registers MATPAC with the Auto classes

model = AutoModel.from_pretrained("{repo}", trust_remote_code={block_package}).eval()
feature_extractor = AutoFeatureExtractor.from_pretrained("{repo}", trust_remote_code={block_package})
print("MODEL_MODULE", type(model).__module__)
print("EXTRACTOR_MODULE", type(feature_extractor).__module__)
reference = np.load("{reference}")
with torch.no_grad():
    outputs = model(**feature_extractor(list(reference["audio"]), sampling_rate=16000, return_tensors="pt"))
np.testing.assert_allclose(outputs.pooler_output.numpy(), reference["pooled"], atol=1e-5)
np.testing.assert_allclose(outputs.last_hidden_state.numpy(), reference["frames"], atol=1e-5)
print("LOADED_AND_MATCHED")
"""


def _run(script: str, **fields) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script.format(**fields))], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def pushed(hub_stub, tmp_path_factory):
    """One subprocess pushes a tiny model, its feature extractor and a rendered card, then downloads the repo into
    its empty cache with `from_pretrained` (matpac_hf installed) and compares the embeddings (one interpreter start
    for both). Returns the reference-outputs file and the subprocess's stdout."""
    reference = tmp_path_factory.mktemp("hub") / "reference.npz"
    fields = dict(repo=REPO_ID, reference=reference, tests_dir=Path(__file__).parent, block_package=False)
    out = _run(textwrap.dedent(PUSH_SCRIPT) + textwrap.dedent(LOAD_SCRIPT), **fields)
    assert "PUSHED" in out
    return reference, out


def test_pushed_files(hub_stub, pushed):
    # Weights through git-LFS; JSON, code and the rendered card as regular files.
    files = hub_stub.files(REPO_ID)
    assert files["model.safetensors"].lfs and files["model.safetensors"].size > 50_000
    for name in ("config.json", "preprocessor_config.json", "README.md"):
        assert not files[name].lfs
    card = ModelCard(hub_stub.read_blob(files["README.md"].sha256).decode())
    assert card.data.pipeline_tag == "feature-extraction" and card.data.library_name == "transformers"
    assert card.data.license == "mit" and card.data.datasets == ["agkphysics/AudioSet"] and "matpac" in card.data.tags
    assert f'AutoModel.from_pretrained("{REPO_ID}")' in card.text
    assert ("PUT", f"/__lfs__/{files['model.safetensors'].sha256}") in hub_stub.requests
    assert not hub_stub.unhandled, f"endpoints the stub lacks: {hub_stub.unhandled}"


def test_from_pretrained_downloads_and_matches(hub_stub, pushed):
    # With matpac_hf installed, from_pretrained downloads the repo (empty cache) and gives the same embeddings.
    _, out = pushed
    assert "LOADED_AND_MATCHED" in out and "MODEL_MODULE matpac_hf.modeling_matpac" in out
    assert any(method == "GET" and path.endswith("/model.safetensors") for method, path in hub_stub.requests)
    assert not hub_stub.unhandled, f"endpoints the stub lacks: {hub_stub.unhandled}"


def test_remote_code_loads_without_the_package(hub_stub, pushed):
    files = hub_stub.files(REPO_ID)
    for code_file in ("configuration_matpac.py", "modeling_matpac.py", "feature_extraction_matpac.py"):
        assert code_file in files, f"{code_file} was not pushed: the repo cannot load with trust_remote_code"
    out = _run(LOAD_SCRIPT, repo=REPO_ID, reference=pushed[0], block_package=True)
    assert "LOADED_AND_MATCHED" in out
    assert "MODEL_MODULE transformers_modules." in out and "EXTRACTOR_MODULE transformers_modules." in out
    assert not hub_stub.unhandled, f"endpoints the stub lacks: {hub_stub.unhandled}"
