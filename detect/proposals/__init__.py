"""Region proposals for R-CNN and Fast R-CNN: selective search and proposal files."""
from detect.proposals.opencv_check import require_selective_search

__all__ = ["require_selective_search"]
