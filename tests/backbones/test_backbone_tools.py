"""The summary table and the benchmark's torchvision counterparts (no timing is asserted)."""
import argparse

import pytest
import torch

from backbones import build_backbone
from backbones.summary import format_table, summarize
from detect.benchmarks.backbones import add_arguments, parse_size, torchvision_counterpart


def test_summary_rows_and_table():
    rows = summarize(["resnet18", "googlenet"], size=64, repeats=1)
    assert [r.name for r in rows] == ["resnet18", "googlenet"]
    assert rows[0].outputs == ["c2", "c3", "c4", "c5"] and rows[0].channels == [64, 128, 256, 512]
    assert rows[0].strides == [4, 8, 16, 32]
    assert rows[0].parameters == 11_176_512  # torchvision's resnet18 (11,689,512) minus fc
    assert rows[1].channels == [480, 832, 1024] and rows[1].latency_ms > 0
    table = format_table(rows, size=64).splitlines()
    assert table[0].startswith("| backbone | outputs | channels | strides | parameters (M) | forward 64 px")
    assert table[2].startswith("| resnet18 | c2, c3, c4, c5 | 64, 128, 256, 512 | 4, 8, 16, 32 | 11.2 |")


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "dcn_resnet50", "tv:mobilenet_v3_small", "tv:densenet121"])
def test_benchmark_counterparts_compute_the_same_features(name):
    torch.manual_seed(0)
    options = {"out_features": ["c2", "c3"]} if name == "dcn_resnet50" else {}
    ours = build_backbone(name, **options).eval()
    theirs, note = torchvision_counterpart(name, ours)
    theirs.eval()
    assert ("plain ResNet" in note) == name.startswith("dcn")
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        got, expected = ours(x), theirs(x)
    assert list(got) == list(expected)
    for key in got:
        # At initialisation the deformable convs sample the regular grid (float rounding only).
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)


def test_benchmark_arguments():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--sizes", "224", "800x1067", "--channels-last", "--threads", "2"])
    assert args.sizes == [(224, 224), (800, 1067)] and args.channels_last and args.threads == 2
    assert parse_size("33x65") == (33, 65)
    with pytest.raises(argparse.ArgumentTypeError, match="HxW"):
        parse_size("big")
