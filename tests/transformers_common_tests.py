"""transformers' own common test mixins (`ModelTesterMixin`, `ConfigTester`, `SequenceFeatureExtractionTestMixin`),
taken from the source archive of the *installed* transformers version, so that `tests/test_transformers_common.py`
uses them the way an in-tree model's `tests/models/<name>/` files do.

`import_transformers_tests()` makes `transformers_tests` (transformers' `tests/` folder) importable:

1. it looks for `<repo>/.transformers_tests/<version>/transformers_tests/` (git-ignored; override the root with
   `MATPAC_TRANSFORMERS_TESTS_DIR`);
2. if that folder is missing, it runs `pip download --no-binary :all: --no-deps transformers==<version>` (PyPI) and
   unpacks the archive's top-level `tests/*.py` and `LICENSE` (Apache-2.0) there, unchanged;
3. the source archive ships only those top-level files, not the sub-packages three of them import. This helper adds
   three small stand-ins of our own, each saying what it replaces (see `_STAND_INS`).

Prefetch (e.g. as a CI step, or before going offline): `python tests/transformers_common_tests.py`.
"""

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_NAME = "transformers_tests"

# Sub-modules that the top-level test files import but the source archive does not contain, with our stand-ins.
_STAND_INS = {
    "exporters/__init__.py": "",
    "exporters/test_export.py": '''\
"""matpac-hf stand-in: transformers' `tests/exporters/test_export.py` is not in the source archive.

`ModelTesterMixin` derives from `ExportTesterMixin`, which adds the torch.export / ONNX / ExecuTorch export tests.
With this empty class those tests are not run (MATPAC's forward has data-dependent shapes: the number of chunks and
of valid patch columns depend on `attention_mask`, so `torch.export` with static shapes does not apply)."""


class ExportTesterMixin:
    pass
''',
    "generation/__init__.py": "",
    "generation/test_utils.py": '''\
"""matpac-hf stand-in: transformers' `tests/generation/test_utils.py` is not in the source archive.

`GenerationTesterMixin` holds the `generate()` tests; `ModelTesterMixin` only checks that a model that cannot generate
does not inherit it. MATPAC models do not generate, so an empty class is exact here."""


class GenerationTesterMixin:
    pass
''',
    "utils/__init__.py": "",
    "utils/test_configuration_utils.py": '''\
"""matpac-hf stand-in: transformers' `tests/utils/test_configuration_utils.py` is not in the source archive.

`ConfigTester.check_config_arguments_init` builds a config from `config_common_kwargs` (fields of `PreTrainedConfig`
set to values other than their defaults) and checks each one is stored as given. This is our own list of those
fields for the installed transformers version."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "dtype": "float16",  # ConfigTester expects torch.float16 back
    "chunk_size_feed_forward": 5,
    "is_encoder_decoder": True,
    "architectures": ["MatpacModel"],
    "problem_type": "regression",
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
}
''',
}


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def tests_folder(version: str | None = None) -> Path:
    """Where the tests of transformers `version` (default: the installed one) are unpacked."""
    root = Path(os.environ.get("MATPAC_TRANSFORMERS_TESTS_DIR", REPO_ROOT / ".transformers_tests"))
    return root / (version or transformers_version())


def fetch(version: str | None = None) -> Path:
    """Unpacks transformers' `tests/` for `version` (default: installed) unless already there; returns the folder
    that holds the `transformers_tests` package."""
    version = version or transformers_version()
    folder = tests_folder(version)
    package = folder / PACKAGE_NAME
    if (package / ".complete").exists():
        return folder
    with tempfile.TemporaryDirectory() as download_dir:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
        command += ["--dest", download_dir, f"transformers=={version}"]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = list(Path(download_dir).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"Could not download the source archive of transformers=={version} from PyPI to run transformers' "
                f"common tests ({' '.join(command)} -> exit {result.returncode}):\n{result.stderr[-2000:]}\n"
                "Run `python tests/transformers_common_tests.py` where PyPI is reachable, or set "
                "MATPAC_TRANSFORMERS_TESTS_DIR to a folder where it was run."
            )
        package.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts  # ("transformers-<version>", ...)
                top_level_test = len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py")
                if member.isfile() and (top_level_test or parts[1:] == ("LICENSE",)):
                    (package / parts[-1]).write_bytes(archive.extractfile(member).read())
    if not (package / "test_modeling_common.py").exists():
        raise RuntimeError(f"The transformers=={version} source archive has no tests/test_modeling_common.py.")
    (package / "__init__.py").write_text("")
    for relative_path, text in _STAND_INS.items():
        path = package / relative_path
        if not path.exists():  # a later archive that ships the real module keeps it
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    (package / ".complete").write_text(version + "\n")
    return folder


def import_transformers_tests():
    """Fetches (if needed) and imports transformers' test package; returns the `transformers_tests` module."""
    folder = str(fetch())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(PACKAGE_NAME)


if __name__ == "__main__":
    print(fetch())
