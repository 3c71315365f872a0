"""An uploaded photo, checked and made safe to serve. Pure: bytes in, bytes out.

:func:`process` takes the body of ``PUT /v1/therapists/{id}/photo`` and its
declared type and returns a :class:`Photo` that holds nothing of the upload but
its pixels:

1. the declared type is ``image/jpeg`` or ``image/png`` and the body is at most
   :data:`MAX_BYTES`, else :class:`~core.errors.InvalidImage` (422) or
   :class:`~core.errors.TooLarge` (413);
2. the bytes are opened with the declared format's decoder *alone* (Pillow
   would otherwise try every format it knows, some of them far less hardened),
   so bytes of another format than declared are refused: the declared type is
   what we promise to serve, and a file that is one thing to one parser and
   another to the next (a polyglot) is exactly what this step keeps out;
3. dimensions over :data:`MAX_PIXELS` are refused before a pixel is decoded (a
   few kilobytes of PNG can declare gigapixels: a decompression bomb);
4. the image is verified (``verify()``: structure and checksums), then decoded
   whole (``load()``): truncated or corrupt bytes fail here;
5. the EXIF orientation is applied to the pixels, colours are converted to
   sRGB when an ICC profile says they are in another space, the longest side is
   brought down to :data:`MAX_SIDE`;
6. the pixels are copied into a fresh image, which has no metadata at all (no
   EXIF, so no GPS position, camera or time; no XMP, ICC profile, PNG text
   chunks or comments), and encoded again in the declared format: JPEG as RGB
   at quality :data:`JPEG_QUALITY`; PNG as PNG, RGBA when the upload had any
   transparency (a logo on a transparent ground stays one), RGB otherwise.

PNG stays PNG rather than becoming JPEG because PNGs are mostly drawn images
(logos, avatars) where JPEG artefacts show, and because transparency would be
lost; the cost is a larger file, bounded by :data:`MAX_SIDE`.

Every failure to decode is :class:`~core.errors.InvalidImage`: Pillow parsing
hostile input can raise almost anything (``OSError``, ``SyntaxError``,
``ValueError``, ``struct.error``...), and none of it is the server's fault.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass, field
from typing import Final

from PIL import Image, ImageCms, ImageOps

from core.errors import InvalidImage, TooLarge

#: Largest upload: 2 MiB (PROTOCOL.md §7).
MAX_BYTES: Final = 2 * 1024 * 1024
#: Most pixels an upload may declare; about a 7,700 x 5,200 photo. Bounds the
#: memory one decode takes (RGBA: 4 bytes a pixel) whatever the file claims.
MAX_PIXELS: Final = 40_000_000
#: Longest side of a stored photo, in pixels.
MAX_SIDE: Final = 1024
JPEG_QUALITY: Final = 85
#: Hex characters of the SHA-256 kept as a photo's digest (64 bits): it names a
#: version of one therapist's photo in URLs and ETags, not a security property.
DIGEST_LEN: Final = 16

#: Declared (and served) media type -> Pillow's format.
TYPES: Final = {"image/jpeg": "JPEG", "image/png": "PNG"}

_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_ICC_MODES: Final = frozenset({"RGB", "RGBA", "CMYK"})


@dataclass(frozen=True, slots=True)
class Photo:
    """A photo as stored and served: re-encoded bytes, their media type, and
    :data:`DIGEST_LEN` hex characters of their SHA-256."""

    data: bytes = field(repr=False)
    content_type: str
    digest: str


def declared_type(content_type: str | None) -> str:
    """The media type a ``Content-Type`` header declares, lower case and without
    parameters (``"image/PNG; x=1"`` -> ``"image/png"``), if it is one of
    :data:`TYPES`; else :class:`~core.errors.InvalidImage`."""
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared not in TYPES:
        raise InvalidImage("the body must be image/jpeg or image/png (say so in Content-Type)")
    return declared


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:DIGEST_LEN]


def process(data: bytes, content_type: str) -> Photo:
    """``data`` declared as ``content_type``, checked and re-encoded without
    metadata (module docstring). Raises :class:`~core.errors.InvalidImage` or
    :class:`~core.errors.TooLarge`; returns a photo of the declared type."""
    declared = declared_type(content_type)
    fmt = TYPES[declared]
    if len(data) > MAX_BYTES:
        raise TooLarge(f"a photo may be at most {MAX_BYTES} bytes (2 MiB)")
    image = _decode(data, fmt)
    try:
        out = _encode(_clean(image, fmt), fmt)
    finally:
        image.close()
    return Photo(out, declared, digest_of(out))


def _decode(data: bytes, fmt: str) -> Image.Image:
    """The image, decoded whole, or :class:`InvalidImage`."""
    rule = f"the body must be a {fmt} image that decodes"
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as probe:
            _check_pixels(probe.size)
            probe.verify()
        # verify() leaves the image unusable: open it again to decode it.
        image = Image.open(io.BytesIO(data), formats=[fmt])
        try:
            _check_pixels(image.size)
            if fmt == "JPEG":
                # Let libjpeg decode a large photo at 1/2, 1/4 or 1/8 scale, never
                # below MAX_SIDE: less memory and time, same result after resizing.
                image.draft(None, (MAX_SIDE, MAX_SIDE))
            image.load()
        except BaseException:
            image.close()
            raise
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own check, when a header declares even more than ours allows
        # (the warning is raised where warnings are errors, as under pytest).
        raise InvalidImage(f"{rule}, of at most {MAX_PIXELS} pixels") from None
    except Exception:  # hostile input: anything Pillow raises is the upload's fault
        raise InvalidImage(rule) from None
    return image


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise InvalidImage(f"an image may have at most {MAX_PIXELS} pixels")


def _clean(image: Image.Image, fmt: str) -> Image.Image:
    """The pixels of ``image`` upright, in sRGB, at most :data:`MAX_SIDE` on a
    side, in a new image without any metadata."""
    target = "RGBA" if fmt == "PNG" and _has_alpha(image) else "RGB"
    icc = image.info.get("icc_profile")
    # An unreadable EXIF block leaves the image as it is (and is dropped below).
    with contextlib.suppress(Exception):
        ImageOps.exif_transpose(image, in_place=True)
    out = image
    if target == "RGBA" and out.mode != "RGBA":
        # Now, while the upload's info still says which colour is transparent.
        out = out.convert("RGBA")
    if isinstance(icc, bytes) and icc and out.mode in _ICC_MODES:
        out = _to_srgb(out, icc)
    if out.mode != target:
        out = out.convert(target)
    out.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    # A fresh image from the raw pixels: its info is empty, so nothing of the
    # upload's metadata can ride along into the encoder.
    return Image.frombytes(target, out.size, out.tobytes())


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """``image`` converted from its ICC profile to sRGB (a phone's Display P3
    photo would look washed out once its profile is dropped); unchanged when
    the profile cannot be used."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(image, source, srgb, outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image
    return converted if converted is not None else image


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buf, "PNG", optimize=True)
    return buf.getvalue()
