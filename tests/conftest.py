"""Shared pytest fixtures. The tiny-config factory lives in tests/matpac_testing.py (`from matpac_testing import
tiny_config`)."""

import os

import pytest
from matpac_testing import tiny_config


# One torch intra-op thread per test process, and per subprocess the tests start (they inherit the environment), unless
# OMP_NUM_THREADS is set: the suite's models are tiny, so a second thread only adds synchronisation, and on a busy
# machine its spin-waits cost far more CPU than they save. For parallelism, run test processes instead (with
# pytest-xdist: `pytest -n 2 --dist loadfile`).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    # Marks that transformers' common test mixins use (tests/test_transformers_common.py); transformers registers them
    # in its own conftest.
    for mark in (
        "accelerate_tests",
        "flash_attn_test",
        "flash_attn_3_test",
        "flash_attn_4_test",
        "torch_compile_test",
    ):
        config.addinivalue_line("markers", f"{mark}: a mark of transformers' common tests")


@pytest.fixture(scope="session")
def tiny_matpac_folder(tmp_path_factory):
    """A randomly initialised tiny MatpacModel + MatpacFeatureExtractor saved with `save_pretrained`."""
    import torch

    from matpac_hf import MatpacFeatureExtractor, MatpacModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_matpac")
    MatpacModel(tiny_config()).save_pretrained(folder)
    MatpacFeatureExtractor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hub_stub(tmp_path_factory):
    """A Hugging Face Hub API stub on 127.0.0.1 (see tests/hub_stub.py), shared by the tests of a module, for code run
    in a *subprocess*.

    Sets in `os.environ` (inherited by subprocesses; huggingface_hub reads it at import time): HF_ENDPOINT, a fake
    HF_TOKEN, HF_HUB_OFFLINE=0, HF_HUB_DISABLE_XET=1 (the stub speaks basic LFS, not Xet) and a fresh HF_HOME (empty
    download and remote-code caches); all restored afterwards. Yields the running `HubStub` (`.endpoint`,
    `.files(repo_id)`, `.read_blob(sha256)`, `.requests`, `.unhandled`).
    """
    from hub_stub import HubStub

    with HubStub() as stub, pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("HF_ENDPOINT", stub.endpoint)
        monkeypatch.setenv("HF_TOKEN", stub.token)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.delenv("HF_MODULES_CACHE", raising=False)
        yield stub


@pytest.fixture(scope="module")
def in_process_hub(hub_stub):
    """The Hub stub for in-process code: transformers' shared HfApi and huggingface_hub's default endpoint point at it
    (huggingface_hub read the environment at import time; without the endpoint, `push_to_hub`'s model-card lookup
    retries huggingface.co for ~45 s), and Xet is off (the stub speaks basic LFS)."""
    import transformers.utils.hub as transformers_hub
    from huggingface_hub import HfApi, constants

    api = HfApi(endpoint=hub_stub.endpoint, token=hub_stub.token, library_name="transformers")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(transformers_hub, "_hf_api", api)
        monkeypatch.setattr(constants, "ENDPOINT", hub_stub.endpoint)
        template = hub_stub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"  # hf_hub_url's, made at import time
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        yield hub_stub
