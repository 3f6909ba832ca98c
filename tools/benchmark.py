#!/usr/bin/env python
"""Speed of our code against the torchvision equivalent, side by side in one process.

    python tools/benchmark.py backbones [--channels-last] [--threads 2]
    python tools/benchmark.py data --root ../shared/data/BCCD
    python tools/benchmark.py detector [--train] [--threads 2]
    python tools/benchmark.py segmentation [--threads 2] [--size 520]
    python tools/benchmark.py export
    python tools/benchmark.py proposals [--svd]

Each suite prints a markdown table (medians over repeats, ratio ours / torchvision)
with the machine and command; docs/benchmarks.md records the figures.
`python tools/benchmark.py SUITE --help` lists a suite's options.
"""
import argparse
import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detect.cli import add_debug_argument, tool_main  # noqa: E402

SUITES = {
    "backbones": "detect.benchmarks.backbones",
    "data": "detect.benchmarks.data_pipeline",
    "detector": "detect.benchmarks.detectors",
    "export": "detect.benchmarks.export",
    "segmentation": "detect.benchmarks.segmentation",
    "proposals": "detect.benchmarks.proposal_detectors",
}


@tool_main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in SUITES:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("suite", choices=sorted(SUITES))
        add_debug_argument(parser)
        parser.parse_args([a for a in argv if a != "--debug"][:1])  # prints usage and exits
        return
    # Import only the chosen suite: each one pulls in its own models and data.
    module = importlib.import_module(SUITES[argv[0]])
    parser = argparse.ArgumentParser(prog=f"benchmark.py {argv[0]}", description=module.__doc__)
    module.add_arguments(parser)
    add_debug_argument(parser)
    module.run(parser.parse_args(argv[1:]))


if __name__ == "__main__":
    main()
