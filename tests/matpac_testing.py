"""The one tiny MATPAC configuration of the test suite: `from matpac_testing import tiny_config` (tests/ is on the
pytest `pythonpath`, see setup.cfg)."""

# Tests pass overrides for what they exercise.
TINY_MATPAC_CONFIG = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    decoder_hidden_size=32,
    decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=64,
    head_hidden_size=48,
    head_bottleneck_size=16,
    head_num_prototypes=40,
    max_frames=64,  # 4 patch columns per chunk: clips over 0.64 s exercise the chunking; 5 x 4 = 20 patches
)


def tiny_config(**overrides):
    """A tiny `MatpacConfig` (`TINY_MATPAC_CONFIG` updated with `overrides`)."""
    from matpac_hf import MatpacConfig  # imported here: importing this module stays free of torch

    return MatpacConfig(**{**TINY_MATPAC_CONFIG, **overrides})
