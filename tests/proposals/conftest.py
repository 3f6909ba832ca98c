"""Fixtures for the proposal tests."""
import pytest


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A small generated shapes set (COCO layout, image ids 0..N-1), shared by the tests."""
    from detect.data.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes") / "set", num_images=8, image_size=96, seed=5,
                       empty_fraction=0.0, val_fraction=0.25)


@pytest.fixture
def shapes_data_cfg(shapes_root):
    return dict(format="shapes", root=str(shapes_root),
                shapes=dict(num_images=8, image_size=96, seed=5, empty_fraction=0.0, val_fraction=0.25),
                train=dict(split="train"), val=dict(split="val"), class_names=None)
