"""The version is written once, as ``realtime.__version__``.

pyproject.toml reads it from there (``dynamic = ["version"]``). realtime/openapi.json must
hold its own copy (``info.version`` is required, and the file is read as it is by tools and by
the API tests), so this test fails when the two differ: bump both in one commit.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import realtime
from realtime.api import OPENAPI_FILE

ROOT = Path(__file__).resolve().parent.parent


def test_the_openapi_document_states_the_package_version() -> None:
    version = json.loads(OPENAPI_FILE.read_text())["info"]["version"]
    assert version == realtime.__version__, (
        f"realtime/openapi.json says info.version {version!r}, realtime.__version__ is {realtime.__version__!r}"
    )


def test_pyproject_takes_the_version_from_the_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"], "pyproject.toml: write the version in realtime/__init__.py only"
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "realtime.__version__"}
