import importlib.util
import os

import pytest

from tests.helpers import MODELS


def _load_fetcher():
    spec = importlib.util.spec_from_file_location("fetch_real_models", MODELS / "fetch_real_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def real_models():
    """Trained models from PyPI wheels (nudenet's YOLOv8n, RapidOCR's PP-OCR). CI fetches them; offline runs skip."""
    try:
        return _load_fetcher().fetch()
    except Exception as exc:  # no network to PyPI
        if os.environ.get("CI"):
            raise
        pytest.skip(f"real models unavailable: {exc}")
