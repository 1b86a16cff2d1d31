# Copyright 2026 The matpac-hf developers.
# Licensed under the MIT License.
"""Offline `evaluate` metric modules (one folder each, loaded by path: `evaluate.load(str(METRICS_DIR / name))`) and
what they share (`common`)."""
