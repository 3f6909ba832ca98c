"""Fixtures for the data-path tests (helpers live in data_fixtures.py)."""
import pytest

from data_fixtures import write_coco


@pytest.fixture
def coco_fixture(tmp_path):
    """Two images (ids 0 and 7), non-contiguous category ids 3 and 11, one crowd box."""
    images = [(0, "a.png", 40, 60), (7, "b.png", 30, 20)]
    annotations = [
        {"id": 1, "image_id": 0, "category_id": 11, "bbox": [5, 6, 10, 20], "area": 150.0, "iscrowd": 0},
        {"id": 2, "image_id": 0, "category_id": 3, "bbox": [0.5, 1.5, 30, 8], "area": 200.0, "iscrowd": 0},
        {"id": 5, "image_id": 0, "category_id": 3, "bbox": [40, 20, 10, 10], "area": 90.0, "iscrowd": 1},
        {"id": 9, "image_id": 7, "category_id": 11, "bbox": [2, 3, 4, 5], "iscrowd": 0},
    ]
    return write_coco(tmp_path, images, annotations, [(11, "dog"), (3, "cat")])


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A small generated shapes set shared by several tests."""
    from detect.data.shapes import make_shapes

    return make_shapes(tmp_path_factory.mktemp("shapes") / "set", num_images=24, image_size=96, seed=3,
                       empty_fraction=0.1, val_fraction=0.25)
