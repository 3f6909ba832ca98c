"""Helpers for the data-path tests: tiny hand-written COCO / VOC datasets written in tmp_path."""
import json
from pathlib import Path

import cv2
import numpy as np

BCCD = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "BCCD"


def write_image(path: Path, height: int, width: int, value=(10, 20, 30)) -> Path:
    """A solid RGB image written with OpenCV (which wants BGR: we reverse the tuple)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = value[::-1]
    assert cv2.imwrite(str(path), image)
    return path


def write_coco(tmp_path: Path, images, annotations, categories, name="instances.json") -> tuple[Path, Path]:
    """images: list of (id, file_name, height, width); writes the image files too."""
    image_dir = tmp_path / "images"
    for image_id, file_name, height, width in images:
        write_image(image_dir / file_name, height, width)
    ann_file = tmp_path / name
    ann_file.write_text(json.dumps({
        "images": [{"id": i, "file_name": f, "height": h, "width": w} for i, f, h, w in images],
        "annotations": annotations,
        "categories": [{"id": c, "name": n} for c, n in categories],
    }))
    return image_dir, ann_file


VOC_OBJECT = """<object><name>{name}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"""


def write_voc(root: Path, images: dict, split="train", size=True) -> Path:
    """images: {stem: (height, width, [(name, xmin, ymin, xmax, ymax, difficult), ...])}."""
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for stem, (height, width, objects) in images.items():
        write_image(root / "JPEGImages" / f"{stem}.jpg", height, width)
        body = "".join(VOC_OBJECT.format(name=n, xmin=a, ymin=b, xmax=c, ymax=d, difficult=diff)
                       for n, a, b, c, d, diff in objects)
        size_xml = f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>" if size else ""
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename>{size_xml}{body}</annotation>")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in images))
    return root




def needs_bccd():
    import pytest

    return pytest.mark.skipif(not (BCCD / "ImageSets" / "Main" / "train.txt").is_file(),
                              reason=f"BCCD not found at {BCCD} (../shared/data beside the repository)")
