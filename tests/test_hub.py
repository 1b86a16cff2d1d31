"""push_to_hub / from_pretrained end to end against the local Hub stub (tests/hub_stub.py).

The push runs in process (transformers' shared `HfApi` pointed at the stub: the `in_process_hub` fixture). The
downloads run in one fresh subprocess with the environment set by the `hub_stub` fixture (huggingface_hub reads
HF_ENDPOINT and HF_HOME at import time): it first loads with remote code only (matpac_hf blocked, empty cache), then
imports matpac_hf and loads the same repo with the installed classes; both give the pushed model's embeddings.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from matpac_testing import tiny_config
from transformers import pipeline

from matpac_hf import MatpacFeatureExtractor, MatpacModel
from matpac_hf.model_card import render_model_card


REPO_ID = "stub-user/tiny-matpac"

LOAD_SCRIPT = """
import sys
sys.modules["matpac_hf"] = None  # `import matpac_hf` now raises ImportError: only the Hub's code can be used
import numpy as np
import torch
from transformers import AutoFeatureExtractor, AutoModel

reference = np.load("{reference}")


def load_and_compare(trust_remote_code, cache_dir=None):
    model = AutoModel.from_pretrained("{repo}", trust_remote_code=trust_remote_code, cache_dir=cache_dir).eval()
    feature_extractor = AutoFeatureExtractor.from_pretrained(
        "{repo}", trust_remote_code=trust_remote_code, cache_dir=cache_dir
    )
    print("MODEL_MODULE", type(model).__module__)
    print("EXTRACTOR_MODULE", type(feature_extractor).__module__)
    with torch.no_grad():
        outputs = model(**feature_extractor(list(reference["audio"]), sampling_rate=16000, return_tensors="pt"))
    np.testing.assert_allclose(outputs.pooler_output.numpy(), reference["pooled"], atol=1e-5)
    np.testing.assert_allclose(outputs.last_hidden_state.numpy(), reference["frames"], atol=1e-5)


load_and_compare(trust_remote_code=True)  # the Hub's code files, downloaded into the empty cache
print("REMOTE_CODE_LOADED_AND_MATCHED")
del sys.modules["matpac_hf"]
import matpac_hf  # registers MATPAC with the Auto classes

load_and_compare(trust_remote_code=False, cache_dir="{cache}")  # the installed classes, downloaded again
print("INSTALLED_PACKAGE_LOADED_AND_MATCHED")
"""


@pytest.fixture(scope="module")
def pushed(in_process_hub, tmp_path_factory):
    """Pushes a tiny model, its feature extractor and a rendered card (in process), then loads the repo in one
    subprocess, remote code first. Returns the subprocess's stdout: (remote-code part, installed-package part)."""
    torch.manual_seed(0)
    model = MatpacModel(tiny_config()).eval()
    feature_extractor = MatpacFeatureExtractor()
    model.push_to_hub(REPO_ID)
    feature_extractor.push_to_hub(REPO_ID)
    card = render_model_card("pretrained_encoder", repo_id=REPO_ID, license="mit", datasets=["agkphysics/AudioSet"])
    api = HfApi(endpoint=in_process_hub.endpoint, token=in_process_hub.token)
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=REPO_ID)

    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 12000)).astype(np.float32)
    with torch.no_grad():
        outputs = model(**feature_extractor(list(audio), sampling_rate=16000, return_tensors="pt"))
    reference = tmp_path_factory.mktemp("hub") / "reference.npz"
    np.savez(reference, audio=audio, pooled=outputs.pooler_output.numpy(), frames=outputs.last_hidden_state.numpy())
    cache = reference.parent / "second_cache"  # empty: the installed-package load downloads the repo again
    script = textwrap.dedent(LOAD_SCRIPT.format(repo=REPO_ID, reference=reference, cache=cache))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"subprocess failed:\n{result.stdout}\n{result.stderr[-5000:]}"
    remote_code, installed = result.stdout.split("REMOTE_CODE_LOADED_AND_MATCHED", 1)
    assert "INSTALLED_PACKAGE_LOADED_AND_MATCHED" in installed, result.stdout
    return remote_code, installed


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
    # With matpac_hf installed, from_pretrained downloads the repo (into an empty cache) and gives the same embeddings.
    _, installed = pushed
    assert "MODEL_MODULE matpac_hf.modeling_matpac" in installed
    assert "EXTRACTOR_MODULE matpac_hf.feature_extraction_matpac" in installed
    weight_downloads = [
        path for method, path in hub_stub.requests if method == "GET" and path.endswith("/model.safetensors")
    ]
    assert len(weight_downloads) == 2  # one per cache: the remote-code load, then the installed-package load
    assert not hub_stub.unhandled, f"endpoints the stub lacks: {hub_stub.unhandled}"


def test_remote_code_loads_without_the_package(hub_stub, pushed):
    files = hub_stub.files(REPO_ID)
    for code_file in ("configuration_matpac.py", "modeling_matpac.py", "feature_extraction_matpac.py"):
        assert code_file in files, f"{code_file} was not pushed: the repo cannot load with trust_remote_code"
    remote_code, _ = pushed  # printed before the subprocess imported matpac_hf (blocked until then)
    assert "MODEL_MODULE transformers_modules." in remote_code
    assert "EXTRACTOR_MODULE transformers_modules." in remote_code
    assert not hub_stub.unhandled, f"endpoints the stub lacks: {hub_stub.unhandled}"


def test_pipeline_push_to_hub_uploads_the_pipeline_code(in_process_hub):
    # transformers' custom-pipeline mechanism: the pipeline's push_to_hub writes `custom_pipelines` into the config and
    # uploads the pipeline's code files with the model's.
    repo_id = "stub-user/tiny-matpac-pipeline"
    model = MatpacModel(tiny_config()).eval()
    pipeline("audio-feature-extraction", model=model, feature_extractor=MatpacFeatureExtractor()).push_to_hub(repo_id)
    files = in_process_hub.files(repo_id)
    pushed_config = in_process_hub.read_blob(files["config.json"].sha256).decode()
    assert "custom_pipelines" in pushed_config and "pipelines.AudioFeatureExtractionPipeline" in pushed_config
    for name in ("modeling_matpac.py", "configuration_matpac.py", "pipelines.py", "audio_io.py", "hear.py"):
        assert name in files, f"{name} missing from the pushed repo: {sorted(files)}"
    assert "preprocessor_config.json" in files and "model.safetensors" in files
