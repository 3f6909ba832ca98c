"""Proposal generators a model holds for images that come without proposals.

A generator is a callable ``generator(image Tensor[3, H, W]) -> Tensor[P, 4]`` (xyxy in the
image's pixels, best first). Fast R-CNN and R-CNN build theirs with
:func:`build_proposal_generator` from the ``proposal_generator`` / ``proposal_generator_options``
builder options, and run it through :func:`propose_on_the_fly`, the one place that loops over
the images (with a progress bar on a terminal: seconds per image).
"""
from __future__ import annotations

from torch import Tensor

from detect.errors import UserInputError

__all__ = ["PROPOSAL_GENERATORS", "build_proposal_generator", "propose_on_the_fly"]

PROPOSAL_GENERATORS = ("selective_search",)


def build_proposal_generator(name: str | None, options: dict | None = None):
    """``None`` for ``name=None`` (proposals are given), else the named generator with
    ``options``; an unknown name is a :class:`~detect.errors.UserInputError` listing the known ones."""
    if name is None:
        return None
    if name not in PROPOSAL_GENERATORS:
        raise UserInputError(f"unknown proposal_generator {name!r}; choose one of "
                             f"{', '.join(PROPOSAL_GENERATORS)} or None (proposals given)")
    from detect.proposals.selective_search import SelectiveSearch  # imports cv2: only when asked for

    return SelectiveSearch(**dict(options or {}))


def propose_on_the_fly(generator, images, progress: bool | None = None) -> list[Tensor]:
    """``generator(image)`` for each image, with a transient tqdm bar (the generator's
    ``progress_name``, else ``"proposals"``; image/s) where ``progress`` says so: ``True``
    always, ``False`` never, ``None`` only when stderr is a terminal."""
    images = list(images)
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    if not progress or not images:
        return [generator(image) for image in images]
    from tqdm import tqdm

    name = getattr(generator, "progress_name", "proposals")
    return [generator(image) for image in tqdm(images, desc=name, unit="image", leave=False, dynamic_ncols=True)]
