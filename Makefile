# `make test` and `make demo` create (or refresh) .venv/ at the repo root, install torch 2.13.0 first (pinned: an
# unpinned torch would be upgraded by the package's dependencies), then the package. This project's package registry
# serves the CPU build of that version; elsewhere, plain PyPI serves a CUDA build: point pip at PyTorch's CPU wheel
# index first if you want the small CPU build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.matpac-installed

.PHONY: venv lint format test demo bench bench-learning real-audio-debs clean

$(STAMP): pyproject.toml setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	# The HEAR 2021 validator (tests/test_hear.py): pure Python; it declares Python < 3.9 and requires tensorflow,
	# which it does not use for a torch module (the test stubs the import), hence no deps and no Python check.
	$(PY) -m pip install --quiet --no-deps --ignore-requires-python hearvalidator==2021.0.6
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) tests/transformers_common_tests.py  # transformers' own common tests: fetched once from PyPI (sdist)
	$(PY) -m pytest tests --durations=10

demo: $(STAMP)
	$(PY) examples/run_pretraining_demo.py --output_dir demo_output

# The real-audio corpus of examples/real_audio_corpus.py (Debian voices, soundfonts): `make real-audio-debs` as root.
REAL_AUDIO_DEBS := $(shell cat examples/real_audio_debs.txt)

real-audio-debs:
	apt-get install -y --no-install-recommends $(REAL_AUDIO_DEBS)

# Pretrained vs random encoder on real audio, gain vs steps (~15-20 min on 2 cores; needs real-audio-debs).
bench-learning: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_pretraining_real_audio.py --steps 8000 --eval_steps 1000 2000 4000

bench: $(STAMP)
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_dataloader.py

clean:
	rm -rf $(VENV) demo_output build src/*.egg-info .transformers_tests
