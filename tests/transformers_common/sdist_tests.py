"""Load transformers' common test modules from the PyPI sdist of the installed transformers version.

The sdist's `tests/` folder is downloaded once (`pip download --no-binary :all:`), extracted into a cache folder and
imported as the package `transformers_sdist_tests`, never copied into this repository. The helper modules that
`test_modeling_common.py` and `test_configuration_common.py` import but the sdist lacks are answered by the
`standin_*` modules beside this file.
"""

import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import warnings
from pathlib import Path

import pytest
import transformers

from . import standin_configuration_utils, standin_export, standin_generation

PACKAGE = "transformers_sdist_tests"
# module of the sdist's tests/ folder (relative name) -> our stand-in, used only where the sdist lacks the module
STANDINS = {
    "exporters.test_export": standin_export,
    "generation.test_utils": standin_generation,
    "utils.test_configuration_utils": standin_configuration_utils,
}
PIP_TIMEOUT_S = 600


class SdistTestsUnavailable(RuntimeError):
    """The sdist's tests cannot be obtained (no network, no sdist for this version, ...); the message says why."""


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/hydra-transformers-tests` (default `~/.cache/hydra-transformers-tests`)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hydra-transformers-tests"


def sdist_tests_dir(version: str = transformers.__version__) -> Path:
    """The extracted `tests/` folder of transformers `version`'s sdist; downloads and extracts it on first use."""
    tests_dir = cache_root() / version / "tests"
    if (tests_dir / "test_modeling_common.py").is_file():
        return tests_dir
    if ".dev" in version or "+" in version:
        raise SdistTestsUnavailable(f"transformers {version} is not a PyPI release, so it has no sdist to take the "
                                    "common tests from")
    try:
        tests_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tests_dir.parent) as work:
            archive = _download_sdist(version, Path(work))
            staged = Path(work) / "tests"
            _extract_tests(archive, staged)
            # `ConfigTester`'s module imports its own folder as a package through `direct_transformers_import`
            (staged / "__init__.py").touch()
            if not (tests_dir / "test_modeling_common.py").is_file():  # another process may have finished first
                shutil.rmtree(tests_dir, ignore_errors=True)
                staged.rename(tests_dir)
    except tarfile.TarError as error:
        raise SdistTestsUnavailable(f"the sdist of transformers {version} is unreadable: {error}") from error
    except OSError as error:
        raise SdistTestsUnavailable(f"cannot store transformers' tests in {tests_dir.parent}: {error}") from error
    return tests_dir


def _download_sdist(version: str, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:", "--retries",
               "2", f"transformers=={version}", "--dest", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SdistTestsUnavailable(f"`pip download transformers=={version}` took over {PIP_TIMEOUT_S} s") from None
    archives = sorted(folder.glob("transformers-*.tar.gz"))
    if result.returncode != 0 or not archives:
        last_line = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SdistTestsUnavailable(f"cannot download the sdist of transformers {version} from PyPI: {last_line}")
    return archives[0]


def _extract_tests(archive: Path, destination: Path) -> None:
    """Extract the archive's top-level `tests/` folder (`transformers-<version>/tests/...`) into `destination`."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.split("/")[1:2] == ["tests"]]
        if not any(m.name.endswith("/tests/test_modeling_common.py") for m in members):
            raise SdistTestsUnavailable(f"{archive.name} has no tests/test_modeling_common.py")
        for member in members:
            member.name = "/".join(member.name.split("/")[2:])  # strip "transformers-<version>/tests/"
        tar.extractall(destination, members=members, filter="data")


def common_test_modules() -> tuple:
    """(test_modeling_common, test_configuration_common) of the installed transformers, for a test module to call at
    import: it skips that module, with the reason, when `parameterized` or the sdist's tests cannot be had."""
    pytest.importorskip("parameterized", reason="transformers' test_modeling_common.py needs `parameterized` "
                                                "(pip install -e \".[test]\")")
    try:
        with warnings.catch_warnings():
            # transformers registers its marks (flash_attn_test, ...) in a conftest.py that the sdist does not ship
            warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
            return load_sdist_test_module("test_modeling_common"), load_sdist_test_module("test_configuration_common")
    except SdistTestsUnavailable as error:
        pytest.skip(str(error), allow_module_level=True)


def load_sdist_test_module(name: str) -> types.ModuleType:
    """Import `name` (e.g. "test_modeling_common") from the sdist's tests, with our stand-ins for missing helpers."""
    if PACKAGE not in sys.modules:
        _register_package(sdist_tests_dir())
    return importlib.import_module(f"{PACKAGE}.{name}")


def _register_package(tests_dir: Path) -> None:
    spec = importlib.util.spec_from_file_location(PACKAGE, tests_dir / "__init__.py",
                                                  submodule_search_locations=[str(tests_dir)])
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    sys.modules[PACKAGE] = package
    for relative, standin in STANDINS.items():
        if (tests_dir / f"{relative.replace('.', '/')}.py").is_file():
            continue  # the sdist has the real module
        parent, child = relative.split(".")
        parent_name = f"{PACKAGE}.{parent}"
        if (tests_dir / parent).is_dir():
            importlib.import_module(parent_name)
        elif parent_name not in sys.modules:
            sys.modules[parent_name] = types.ModuleType(parent_name)
            setattr(package, parent, sys.modules[parent_name])
        sys.modules[f"{parent_name}.{child}"] = standin
        setattr(sys.modules[parent_name], child, standin)
