"""Region proposals for R-CNN and Fast R-CNN: selective search and proposal files.

- :mod:`detect.proposals.files`: the proposal-file format, :func:`save_proposals`,
  :func:`load_proposals` -> :class:`ProposalSet` (lookup by image id);
- :mod:`detect.proposals.selective_search`: :class:`SelectiveSearch` (R-CNN's "fast" mode on
  OpenCV contrib), a proposal generator ``generator(image) -> Tensor[P, 4]``;
- :mod:`detect.proposals.generators`: the generator a model holds for images without
  proposals (:func:`build_proposal_generator`) and the one loop that runs it with a progress bar;
- :mod:`detect.proposals.make`: writing a split's file in worker processes, resumably;
- :mod:`detect.proposals.convert`: detectron2 / mmdetection pickles (``allow_pickle=True`` only);
- :mod:`detect.proposals.recall`: recall of a proposal set against the ground truth.
"""
from detect.proposals.files import FORMAT, ProposalFileError, ProposalSet, load_proposals, save_proposals
from detect.proposals.opencv_check import require_selective_search

__all__ = ["require_selective_search", "FORMAT", "ProposalSet", "ProposalFileError", "load_proposals",
           "save_proposals", "SelectiveSearch"]


def __getattr__(name):
    # Selective search imports cv2; the file API should not need it.
    if name == "SelectiveSearch":
        from detect.proposals.selective_search import SelectiveSearch

        return SelectiveSearch
    raise AttributeError(f"module 'detect.proposals' has no attribute {name!r}")
