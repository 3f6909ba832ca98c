"""Install the `detect` and `backbones` packages.

Pinned, tested versions live in constraints.txt; install with
    pip install -c constraints.txt -e ".[dev]"
(`make test` and `make demo` do exactly that).
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "detect" / "__init__.py").read_text()).group(1)

PROPOSALS = ["opencv-contrib-python-headless"]
EXPORT = ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"]

setup(
    name="detect",
    version=VERSION,
    description="Classic object detectors (R-CNN family, YOLOv1, FCN) on PyTorch with pluggable backbones",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["detect", "detect.*", "backbones", "backbones.*"]),
    install_requires=[
        "torch>=2.4",
        "torchvision>=0.19",
        "numpy",
        "pycocotools>=2.0.7",
        "albumentations>=1.4",
        "opencv-python",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        # selective search (R-CNN, Fast R-CNN): cv2.ximgproc; installed after the other OpenCV
        # wheels, which write the same cv2 module (the Makefile reinstalls it last and checks)
        "proposals": PROPOSALS,
        "rcnn": PROPOSALS + ["scikit-learn>=1.3"],  # R-CNN's per-class linear SVMs (liblinear)
        "export": EXPORT,
        "dev": ["pytest>=8", "timm>=1.0", "tensorboard>=2.14", "scikit-learn>=1.3"] + PROPOSALS + EXPORT,
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
