"""Robust image loading: any photo file in, an upright RGB image of a bounded size out, or a reason.

Real photo collections hold more than clean RGB JPEGs: PNG or WebP content under a
``.jpg`` name, CMYK or greyscale JPEGs, palette and alpha images, 16-bit PNGs,
camera photos stored sideways with an EXIF orientation tag, truncated downloads,
HTML error pages saved as ``.jpg``, and the occasional decompression bomb.
:func:`open_rgb` turns every readable one into an upright 8-bit RGB image and
names each conversion it made; anything else raises :class:`ImageRejected` with a
one-line reason (``missing file``, ``truncated or corrupt JPEG: ...``,
``decompression bomb: N pixels > limit L``, ...). Nothing here raises anything else
for a bad file, so a caller that catches :class:`ImageRejected` never stops on one.

Speed: for JPEGs the decoder is asked for a reduced image (``Image.draft``: libjpeg
scales by 1/2, 1/4 or 1/8 in the DCT domain) no smaller than the output, then
Pillow resizes the rest of the way (bicubic, antialiased). For originals of
1600 px and an output of 256 px this decodes 4-16x fewer pixels than a full decode.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

__all__ = [
    "PIXEL_LIMIT",
    "CONVERSIONS",
    "ImageRejected",
    "ConvertedImage",
    "target_size",
    "open_rgb",
    "encode_jpeg",
    "convert_image",
]

# Pillow's own warning threshold (about 9459 x 9459); a file claiming more pixels is refused
# before it is decoded. Pillow itself refuses anything over twice its threshold.
PIXEL_LIMIT = 89_478_485

# Every kind of conversion open_rgb reports (a file can have several).
CONVERSIONS = (
    "png", "webp", "gif", "bmp", "tiff", "other_format",  # not JPEG content (whatever the file name says)
    "cmyk", "greyscale", "palette", "alpha", "16bit", "other_mode", "exif_rotation",
)
_FORMATS = {"PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
_JPEG_FORMATS = ("JPEG", "MPO")  # MPO: multi-picture JPEG from cameras; its first frame is a JPEG
# EXIF orientation -> the transpose that makes the picture upright (EXIF 2.3, tag 0x0112).
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATION_TAG = 0x0112
_WHITE = (255, 255, 255)


class ImageRejected(Exception):
    """The file cannot be turned into an image; ``reason`` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ConvertedImage:
    """:func:`convert_image`'s answer: JPEG bytes and what was done, or the reason for a skip."""

    data: bytes | None
    size: tuple[int, int] | None  # (width, height) of the output
    conversions: tuple[str, ...]
    reason: str | None
    resized: bool = False  # False: the original was no larger than the output size (never upscaled)


def target_size(width: int, height: int, image_size: int | None) -> tuple[int, int]:
    """Output size: shorter side ``image_size``, aspect ratio kept; never larger than the original."""
    short = min(width, height)
    if image_size is None or short <= image_size:
        return width, height
    if width <= height:
        return image_size, max(1, round(height * image_size / width))
    return max(1, round(width * image_size / height)), image_size


def _message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit or 32-bit single-band image to 8-bit greyscale, scaling 0..65535 to 0..255."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr8 = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    else:
        arr8 = ((np.clip(arr.astype(np.int64), 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    return Image.fromarray(arr8)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    out = Image.new("RGB", rgba.size, _WHITE)
    out.paste(rgba, mask=rgba.getchannel("A"))
    return out


def _to_rgb(img: Image.Image, kinds: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode == "CMYK":
        kinds.append("cmyk")
        return img.convert("RGB")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        if mode in ("P", "PA"):
            kinds.append("palette")
        elif mode in ("LA", "La", "L"):
            kinds.append("greyscale")
        kinds.append("alpha")
        return _flatten_alpha(img)
    if mode == "P":
        kinds.append("palette")
        return img.convert("RGB")
    if mode in ("L", "1"):
        kinds.append("greyscale")
        return img.convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        kinds.extend(["16bit", "greyscale"])
        return _to_8bit(img).convert("RGB")
    kinds.append("other_mode")  # YCbCr, LAB, HSV, RGBX...
    return img.convert("RGB")


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION_TAG)
    except Exception:  # a broken EXIF block: keep the picture as stored
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _sniff(source) -> str | None:
    """The format a file's first bytes announce, for files Pillow could not even open."""
    try:
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                head = fh.read(12)
        else:
            source.seek(0)
            head = source.read(12)
    except (OSError, ValueError, AttributeError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def open_rgb(
    source: str | os.PathLike | bytes | BinaryIO,
    *,
    image_size: int | None = None,
    pixel_limit: int = PIXEL_LIMIT,
) -> tuple[Image.Image, list[str], bool]:
    """Open ``source`` (a path, bytes or a binary file) as an upright 8-bit RGB image.

    With ``image_size`` the result's shorter side is ``image_size`` (aspect kept) when
    the original is larger; smaller originals keep their size. Returns ``(image,
    conversions, resized)``; conversions name what was done (see :data:`CONVERSIONS`).
    Raises :class:`ImageRejected` with a reason for anything that is not a readable image.
    """
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            st = path.stat()
            if stat.S_ISDIR(st.st_mode):
                raise ImageRejected("unreadable file: a directory, not a file")
            if not stat.S_ISREG(st.st_mode):
                raise ImageRejected("unreadable file: not a regular file (a device, pipe or socket)")
            if st.st_size == 0:
                raise ImageRejected("empty file")
        except FileNotFoundError:
            raise ImageRejected("missing file") from None
        except OSError as exc:
            raise ImageRejected(f"unreadable file: {_message(exc)}") from None
    with warnings.catch_warnings():
        # Pixel counts are checked below; broken EXIF and the like are not worth a warning per file.
        warnings.simplefilter("ignore")
        try:
            img = Image.open(source)
        except FileNotFoundError:
            raise ImageRejected("missing file") from None
        except Image.DecompressionBombError as exc:
            raise ImageRejected(f"decompression bomb: {_message(exc)}") from None
        except Exception as exc:  # UnidentifiedImageError, or a header cut short
            kind = _sniff(source)
            if kind is None:
                raise ImageRejected("not an image: no known image format") from None
            what = "truncated or corrupt JPEG" if kind == "JPEG" else f"corrupt {kind} image"
            raise ImageRejected(f"{what}: {_message(exc)}") from None
        try:
            return _decode(img, image_size, pixel_limit)
        finally:
            img.close()


def _decode(img: Image.Image, image_size: int | None, pixel_limit: int) -> tuple[Image.Image, list[str], bool]:
    fmt = img.format or "unknown"
    width, height = img.size
    if width * height > pixel_limit:
        raise ImageRejected(f"decompression bomb: {width * height} pixels > limit {pixel_limit}")
    if width < 1 or height < 1:
        raise ImageRejected(f"not an image: size {width}x{height}")
    kinds: list[str] = []
    is_jpeg = fmt in _JPEG_FORMATS
    if not is_jpeg:
        kinds.append(_FORMATS.get(fmt, "other_format"))
    if any(isinstance(t[3], str) and ";16" in t[3] for t in (img.tile or [])):
        kinds.append("16bit")  # e.g. 16-bit RGB PNG, which Pillow reads as 8-bit RGB
    tw, th = target_size(width, height, image_size)
    try:
        if is_jpeg and (tw, th) != (width, height):
            img.draft(None, (tw, th))
        orientation = _orientation(img)
        img.load()
        rgb = _to_rgb(img, kinds)
        if rgb.size != (tw, th):
            rgb = rgb.resize((tw, th), Image.Resampling.BICUBIC)
        if orientation != 1:
            rgb = rgb.transpose(_ORIENT[orientation])
            kinds.append("exif_rotation")
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"decompression bomb: {_message(exc)}") from None
    except Exception as exc:  # truncated data, broken streams, decoder errors, out of memory...
        what = "truncated or corrupt JPEG" if is_jpeg else f"corrupt {fmt} image"
        raise ImageRejected(f"{what}: {_message(exc)}") from None
    if rgb is img:
        rgb = img.copy()  # detach from the file, which the caller closes
    return rgb, list(dict.fromkeys(kinds)), (tw, th) != (width, height)


def encode_jpeg(img: Image.Image, quality: int = 90) -> bytes:
    """Baseline JPEG, 4:2:0 chroma subsampling, no metadata: the same pixels give the same bytes."""
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, subsampling="4:2:0", optimize=False, progressive=False)
    return buf.getvalue()


def convert_image(
    source: str | os.PathLike | bytes | BinaryIO,
    *,
    image_size: int | None = 256,
    quality: int = 90,
    pixel_limit: int = PIXEL_LIMIT,
) -> ConvertedImage:
    """:func:`open_rgb` then :func:`encode_jpeg`; a bad file gives ``data=None`` and a ``reason``."""
    try:
        img, kinds, resized = open_rgb(source, image_size=image_size, pixel_limit=pixel_limit)
        data = encode_jpeg(img, quality)
    except ImageRejected as exc:
        return ConvertedImage(None, None, (), exc.reason)
    except Exception as exc:  # never stop a run on one file
        return ConvertedImage(None, None, (), f"unreadable image: {type(exc).__name__}: {_message(exc)}")
    return ConvertedImage(data, img.size, tuple(kinds), None, resized)
