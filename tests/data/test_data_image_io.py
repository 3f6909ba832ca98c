"""read_image / read_image_size / to_tensor: colour order, EXIF, bit depths, errors."""
import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detect.data.image_io import ImageReadError, read_image, read_image_size, to_tensor


def test_reads_rgb_not_bgr(tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 2] = 200  # red in OpenCV's BGR order
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    image = read_image(tmp_path / "red.png")
    assert image.shape == (4, 5, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [200, 0, 0]


def test_exif_orientation_applied_and_header_size_agrees(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)  # red strip on the left of the stored pixels
    pil = Image.fromarray(rgb)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pil.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "rot.jpg")
    assert image.shape == (40, 20, 3)  # width and height swapped
    assert image[2, 10, 0] > 200 and image[-3, 10, 0] < 50  # the strip is now on top
    assert read_image_size(tmp_path / "rot.jpg") == (40, 20)


def test_grayscale_16bit_and_rgba_become_8bit_rgb(tmp_path):
    gray = np.full((3, 4), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    assert read_image(tmp_path / "g.png")[1, 1].tolist() == [77, 77, 77]

    deep = np.array([[0, 257, 32896, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    assert read_image(tmp_path / "d.png")[0, :, 0].tolist() == [0, 1, 128, 255]

    rgba_bgr = np.zeros((2, 2, 4), np.uint8)
    rgba_bgr[..., :3] = (30, 20, 10)  # B, G, R
    rgba_bgr[..., 3] = 0  # fully transparent: the colour is kept, alpha dropped
    cv2.imwrite(str(tmp_path / "a.png"), rgba_bgr)
    out = read_image(tmp_path / "a.png")
    assert out.shape == (2, 2, 3) and out[0, 0].tolist() == [10, 20, 30]


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope\.jpg \(image id 42\)"):
        read_image(tmp_path / "nope.jpg", image_id=42)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError, match=r"cannot decode image .*bad\.jpg"):
        read_image(tmp_path / "bad.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_image_size(tmp_path / "bad.jpg")


def test_to_tensor_matches_permute_and_is_contiguous():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    tensor = to_tensor(array)
    expected = torch.from_numpy(array).permute(2, 0, 1).to(torch.float32) / 255.0
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 7, 9) and tensor.is_contiguous()
    assert torch.equal(tensor, expected)
    assert torch.equal(to_tensor(array[:, ::-1]), torch.flip(expected, dims=[2]))  # non-contiguous input
    assert tensor.max() <= 1.0 and tensor.min() >= 0.0


def test_to_tensor_rejects_wrong_inputs():
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        to_tensor(np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        to_tensor(torch.zeros(3, 2, 2))
