#!/usr/bin/env python
"""Speed of our code against the torchvision equivalent, side by side in one process.

    python tools/benchmark.py backbones [--channels-last] [--threads 2]
    python tools/benchmark.py data --root ../shared/data/BCCD
    python tools/benchmark.py detector [--train] [--threads 2]

Each suite prints a markdown table (medians over repeats, ratio ours / torchvision)
with the machine and command; docs/benchmarks.md records the figures.
"""
import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUITES = {
    "backbones": "detect.benchmarks.backbones",
    "data": "detect.benchmarks.data_pipeline",
    "detector": "detect.benchmarks.detectors",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="suite", required=True)
    for name, module_name in SUITES.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    importlib.import_module(SUITES[args.suite]).run(args)


if __name__ == "__main__":
    main()
