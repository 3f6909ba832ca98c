"""Is OpenCV's contrib build (``cv2.ximgproc``, selective search) the ``cv2`` on the path?

Every OpenCV wheel (opencv-python, opencv-python-headless, opencv-contrib-python-headless)
writes the same ``cv2`` module and the last one installed wins; albumentations pulls in the
headless build, which has no ``ximgproc``. ``main()`` (the
last step of ``make install``) exits 1 with the fix when the contrib build lost.
"""
from __future__ import annotations

import sys

from detect.errors import UserInputError

FIX = ("reinstall the contrib build last, at the version of the other OpenCV wheels: "
       "pip install -c constraints.txt --force-reinstall --no-deps opencv-contrib-python-headless "
       "(make install does this)")


def require_selective_search():
    """``cv2.ximgproc.segmentation``, or a ``UserInputError`` that says how to fix the install."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - cv2 is a core dependency
        raise UserInputError(f"OpenCV is not installed ({exc}); {FIX}") from exc
    segmentation = getattr(getattr(cv2, "ximgproc", None), "segmentation", None)
    if segmentation is None or not hasattr(segmentation, "createSelectiveSearchSegmentation"):
        raise UserInputError(
            f"selective search needs OpenCV's contrib module cv2.ximgproc, which the installed cv2 "
            f"{getattr(cv2, '__version__', '?')} lacks (another OpenCV wheel was installed after "
            f"opencv-contrib-python-headless); {FIX}"
        )
    return segmentation


def main() -> int:
    try:
        require_selective_search()
    except UserInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import cv2

    print(f"OpenCV {cv2.__version__} with cv2.ximgproc (selective search): ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
