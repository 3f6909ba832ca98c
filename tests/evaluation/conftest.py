"""Fixtures for the evaluation tests; the data itself is built in evaluation_data.py."""
import pytest

from evaluation_data import FakeDataset, make_coco_dict, make_predictions


@pytest.fixture
def coco_dict():
    return make_coco_dict()


@pytest.fixture
def dataset(coco_dict):
    return FakeDataset(coco_dict)


@pytest.fixture
def predictions(coco_dict):
    return make_predictions(coco_dict)
