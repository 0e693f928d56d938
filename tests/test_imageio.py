"""Robust image loading: every bad kind of photo is converted or refused with a reason, never raised."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from recipekit.pipeline.imageio import ImageRejected, convert_image, encode_jpeg, open_rgb, target_size


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(w=320, h=240) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size, short, expected", [
    ((1600, 1200), 256, (341, 256)), ((1200, 1600), 256, (256, 341)), ((300, 300), 256, (256, 256)),
    ((200, 100), 256, (200, 100)),  # never upscaled
    ((100, 20000), 256, (100, 20000)), ((20000, 1000), 256, (5120, 256)), ((640, 480), None, (640, 480)),
])
def test_target_size_keeps_aspect_and_never_upscales(size, short, expected):
    assert target_size(*size, short) == expected


def test_plain_rgb_jpeg_is_resized_without_conversions():
    img, kinds, resized = open_rgb(_bytes(_photo(1600, 1000), "JPEG", quality=95), image_size=256)
    assert img.mode == "RGB" and img.size == (410, 256) and kinds == [] and resized


@pytest.mark.parametrize("make, fmt, kinds", [
    (lambda: _photo().convert("CMYK"), "JPEG", ["cmyk"]),
    (lambda: _photo().convert("L"), "JPEG", ["greyscale"]),
    (lambda: _photo().convert("RGBA"), "PNG", ["png", "alpha"]),
    (lambda: _photo().convert("P"), "PNG", ["png", "palette"]),
    (lambda: _photo(), "WEBP", ["webp"]),
    (lambda: _photo().convert("LA"), "PNG", ["png", "greyscale", "alpha"]),
    (lambda: _photo(), "GIF", ["gif", "palette"]),
    (lambda: _photo(), "BMP", ["bmp"]),
])
def test_conversions_are_named(make, fmt, kinds):
    img, got, _ = open_rgb(_bytes(make(), fmt), image_size=128)
    assert img.mode == "RGB" and min(img.size) == 128
    assert sorted(got) == sorted(kinds)


def test_16bit_greyscale_scales_to_8bit():
    arr = np.array([[0, 257 * 100, 65535, 32768]] * 4, dtype=np.uint16)
    img16 = Image.fromarray(arr)
    assert img16.mode.startswith("I;16")
    img, kinds, resized = open_rgb(_bytes(img16, "PNG"))
    assert "16bit" in kinds and "greyscale" in kinds and not resized
    assert np.asarray(img)[0, :, 0].tolist() == [0, 100, 255, 128]


def test_16bit_rgb_png_is_noticed():
    raw = _bytes(_photo(64, 48), "PNG")
    # Re-encode as 16-bit RGB through numpy -> PNG via Pillow's "I;16" is greyscale only, so build it by hand.
    import struct
    import zlib

    arr = np.asarray(Image.open(io.BytesIO(raw))).astype(">u2") * 257
    rows = b"".join(b"\x00" + row.tobytes() for row in arr)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    img, kinds, _ = open_rgb(png)
    assert img.mode == "RGB" and "16bit" in kinds and "png" in kinds
    assert np.array_equal(np.asarray(img), np.asarray(Image.open(io.BytesIO(raw))))


def test_alpha_is_flattened_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    img, _, _ = open_rgb(_bytes(rgba, "PNG"))
    assert img.getpixel((5, 5)) == (255, 255, 255)


def test_exif_rotation_gives_an_upright_image():
    upright = Image.new("RGB", (300, 200), (0, 0, 255))
    upright.paste((255, 0, 0), (0, 0, 300, 100))  # red top half, blue bottom half
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways stores
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    img, kinds, _ = open_rgb(_bytes(stored, "JPEG", exif=exif.tobytes()), image_size=100)
    assert kinds == ["exif_rotation"] and img.size == (150, 100)
    top, bottom = img.getpixel((75, 10)), img.getpixel((75, 90))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"<html>404 Not Found</html>", "not an image"),
    (None, "truncated or corrupt JPEG"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated or corrupt JPEG"),  # cut inside the header
    (b"\x89PNG\r\n\x1a\n\x00\x00", "corrupt PNG image"),
])
def test_unreadable_files_are_refused_with_a_reason(tmp_path, data, reason):
    if data is None:
        whole = _bytes(_photo(400, 300), "JPEG")
        data = whole[: len(whole) // 2]
    path = tmp_path / "x.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageRejected, match=reason):
        open_rgb(path, image_size=64)
    res = convert_image(path)
    assert res.data is None and res.reason.startswith(reason)


def test_a_directory_or_fifo_where_a_photo_should_be_is_an_unreadable_file(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    os.mkfifo(tmp_path / "fifo.jpg")  # opening it would block forever
    assert convert_image(tmp_path / "dir.jpg").reason == "unreadable file: a directory, not a file"
    assert convert_image(tmp_path / "fifo.jpg").reason.startswith("unreadable file: not a regular file")


def test_missing_file_and_decompression_bomb(tmp_path):
    assert convert_image(tmp_path / "nowhere.jpg").reason == "missing file"
    big = tmp_path / "big.jpg"
    Image.new("L", (3000, 2000)).save(big, "PNG")
    res = convert_image(big, pixel_limit=1_000_000)
    assert res.data is None and res.reason == "decompression bomb: 6000000 pixels > limit 1000000"
    assert convert_image(big, pixel_limit=10_000_000).data is not None


def test_encoding_is_deterministic_and_carries_no_metadata():
    img = _photo()
    a, b = encode_jpeg(img, 90), encode_jpeg(img.copy(), 90)
    assert a == b and b"Exif" not in a
    again = Image.open(io.BytesIO(a))
    assert again.format == "JPEG" and again.mode == "RGB" and again.size == img.size
