"""Every package directory must be in pyproject's explicit list, or the wheel silently drops it."""

import sys

from tests.helpers import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _declared():
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def _on_disk():
    found = set()
    for root, prefix in ((REPO / "onnxslim", "onnxslim"), (REPO / "passes", "onnxslim.passes")):
        for init in root.rglob("__init__.py"):
            parts = init.parent.relative_to(root).parts
            found.add(".".join((prefix, *parts)))
    return found


def test_every_package_is_listed_in_pyproject():
    assert _on_disk() == _declared()


def test_no_top_level_passes_module_installed():
    import onnxslim.passes

    assert onnxslim.passes.__name__ == "onnxslim.passes"
    assert "passes" not in sys.modules
