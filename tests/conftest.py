"""Shared pytest fixtures: a tiny saved MATPAC folder and a local Hugging Face Hub stub."""

import pytest


TINY_MATPAC_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_frames=64,  # 4 patch columns per chunk: clips over 0.64 s exercise the chunking
)


@pytest.fixture(scope="session")
def tiny_matpac_folder(tmp_path_factory):
    """A randomly initialised tiny MatpacModel + MatpacFeatureExtractor saved with `save_pretrained`."""
    import torch

    from matpac_hf import MatpacConfig, MatpacFeatureExtractor, MatpacModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_matpac")
    MatpacModel(MatpacConfig(**TINY_MATPAC_CONFIG)).save_pretrained(folder)
    MatpacFeatureExtractor().save_pretrained(folder)
    return folder


@pytest.fixture
def hub_stub(monkeypatch):
    """A Hugging Face Hub API stub on 127.0.0.1 (see tests/hub_stub.py).

    Sets HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE=0 in `os.environ` (inherited by subprocesses, which is where
    huggingface_hub reads them at import time) and yields the running `HubStub` (`.endpoint`, `.storage`).
    """
    from hub_stub import HubStub

    with HubStub() as stub:
        monkeypatch.setenv("HF_ENDPOINT", stub.endpoint)
        monkeypatch.setenv("HF_TOKEN", stub.token)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield stub
