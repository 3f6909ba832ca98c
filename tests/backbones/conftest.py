"""Fixtures for the backbone tests: seeded torchvision models with realistic statistics,
saved to files the way users save them (no downloads)."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from detect.benchmarks.common import calibrate_batchnorm_

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run these tests on one intra-op thread, restored after each module. The inputs are tiny,
    so a second thread gains little, and on a shared machine two OpenMP threads competing with
    other processes' threads spin-wait: the same tests took 3 minutes instead of 25 s."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# Torchvision constructor arguments that make its model comparable to ours.
TV_KWARGS = {
    "googlenet": dict(aux_logits=True, transform_input=True, init_weights=True),
}


def seeded_torchvision_model(name: str, seed: int = 0) -> nn.Module:
    """torchvision ``name`` with seeded random weights whose BatchNorm statistics were set from
    one random batch (so activations stay O(1) and every BN does real work), in eval mode."""
    torch.manual_seed(seed)
    return calibrate_batchnorm_(torchvision.models.get_model(name, weights=None, **TV_KWARGS.get(name, {})))


@pytest.fixture(scope="session")
def torchvision_weights(tmp_path_factory):
    """``get(name) -> (model, path)``: a seeded torchvision model and its state dict on disk."""
    cache: dict[str, tuple[nn.Module, object]] = {}

    def get(name: str):
        if name not in cache:
            model = seeded_torchvision_model(name)
            path = tmp_path_factory.mktemp("weights") / f"{name}.pth"
            torch.save(model.state_dict(), path)
            cache[name] = (model, path)
        return cache[name]

    return get


def capture(model: nn.Module, paths: dict[str, str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run ``model(x)`` and return ``{name: output of the submodule at path}``."""
    found, handles = {}, []
    for name, path in paths.items():
        def hook(_module, _inputs, output, name=name):
            found[name] = output.clone()
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return found


@pytest.fixture(name="capture")
def capture_fixture():
    return capture
