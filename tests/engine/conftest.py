import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_standins import build_tiny_detector, standin_build_dataset  # noqa: E402

from detect.modeling import registry  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def tiny_detector_registered():
    """``tiny_test_detector`` in the detector table while this directory's tests run
    (removed afterwards so other tests see the table as shipped)."""
    added = "tiny_test_detector" not in registry.list_detectors()
    if added:
        registry.register_detector("tiny_test_detector", build_tiny_detector)
    yield
    if added:
        registry._BUILDERS.pop("tiny_test_detector", None)


@pytest.fixture(autouse=True)
def launch_builders_restored(monkeypatch):
    """Config files written by these tests call ``engine_standins.install()``, which swaps
    detect.engine.launch's dataset and loader builders; a test that loads such a config in
    this process must not leave the swap behind for later tests (the demo test runs the
    real builders)."""
    import detect.engine.launch as launch

    monkeypatch.setattr(launch, "build_dataset", launch.build_dataset)
    monkeypatch.setattr(launch, "build_dataloader", launch.build_dataloader)


@pytest.fixture
def standins(monkeypatch):
    """detect.engine.launch builds the stand-in datasets (see engine_standins); the loaders
    are the real ones of detect.data."""
    import detect.engine.launch as launch

    monkeypatch.setattr(launch, "build_dataset", standin_build_dataset)
