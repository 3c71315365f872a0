"""Therapists' photos (PROTOCOL.md §7): the pure check-and-re-encode step
(photos.image), the store on SQLite and PostgreSQL, and the HTTP calls on the
embedded app over each pool. Every image is made here with Pillow."""

from __future__ import annotations

import hashlib
import io
import random
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import embedded_settings
from PIL import ExifTags, Image, PngImagePlugin
from starlette.testclient import TestClient
from test_app_embedded import PROFILE

from core.db import Database
from core.errors import InvalidImage, TooLarge
from core.identity import mint
from dispatch.app import create_app
from dispatch.settings import load_settings
from photos.image import MAX_BYTES, MAX_PIXELS, MAX_SIDE, Photo, process
from photos.store import Photos

SECRET = "photo-test-secret-" + "x" * 40
RED, BLUE = (255, 0, 0), (0, 0, 255)


# -- images --------------------------------------------------------------------------------


def _halves(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """Left half red, right half blue: shows which way an image was turned."""
    width, height = size
    image = Image.new(mode, size, BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


def _jpeg(image: Image.Image, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95, **params)
    return buf.getvalue()


def _png(image: Image.Image, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **params)
    return buf.getvalue()


def _noise(size: tuple[int, int], seed: int = 1) -> Image.Image:
    """Random pixels: they do not compress, so the file is large."""
    width, height = size
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(width * height * 3))


def _exif_with_gps(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "SecretCam"
    exif[ExifTags.Base.Model] = "Model Secret 9"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 26.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (0.0, 7.0, 39.0)
    return exif


def _png_declaring(width: int, height: int) -> bytes:
    """A valid little PNG whose header declares ``width`` x ``height`` pixels
    (its one IDAT holds a few bytes only): a decompression bomb's shape."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _open(photo: Photo) -> Image.Image:
    image = Image.open(io.BytesIO(photo.data))
    image.load()
    return image


def _near(pixel: Any, color: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], color, strict=True))


# -- photos.image.process (pure) -----------------------------------------------------------


def test_a_jpeg_loses_its_exif_and_gps_and_is_turned_upright() -> None:
    data = _jpeg(
        _halves((200, 100)),
        exif=_exif_with_gps(orientation=6),
        comment=b"secret comment",
        xmp=b"<x:xmpmeta>secret xmp</x:xmpmeta>",
    )
    # The upload really carries what must go.
    with Image.open(io.BytesIO(data)) as upload:
        assert upload.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert upload.getexif()[ExifTags.Base.Orientation] == 6
    assert b"SecretCam" in data and b"secret comment" in data and b"xmpmeta" in data

    photo = process(data, "image/jpeg")

    assert photo.content_type == "image/jpeg"
    assert photo.digest == hashlib.sha256(photo.data).hexdigest()[:16]
    out = _open(photo)
    assert out.format == "JPEG" and out.mode == "RGB"
    # Orientation 6: shown turned a quarter clockwise, so the left (red) half on top.
    assert out.size == (100, 200)
    assert _near(out.getpixel((50, 20)), RED) and _near(out.getpixel((50, 180)), BLUE)
    assert not out.getexif() and "exif" not in out.info
    assert not {"icc_profile", "xmp", "comment"} & set(out.info)
    for needle in (b"Exif", b"SecretCam", b"secret", b"xmpmeta", b"http://ns.adobe.com"):
        assert needle not in photo.data


def test_a_png_loses_its_text_chunks_and_keeps_its_transparency() -> None:
    image = _halves((120, 80), "RGBA")
    image.paste((0, 0, 0, 0), (0, 0, 20, 20))  # a transparent corner
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret author")
    info.add_text("Comment", "secret note", zip=True)
    info.add_itxt("Description", "secret description", lang="en")
    exif = _exif_with_gps(orientation=1)
    data = _png(image, pnginfo=info, exif=exif)
    with Image.open(io.BytesIO(data)) as upload:
        assert upload.text and upload.getexif().get_ifd(ExifTags.IFD.GPSInfo)

    photo = process(data, "image/png")

    assert photo.content_type == "image/png"
    out = _open(photo)
    assert out.format == "PNG" and out.mode == "RGBA" and out.size == (120, 80)
    assert out.getpixel((5, 5))[3] == 0  # still transparent
    assert out.getpixel((110, 70)) == (*BLUE, 255)
    assert not getattr(out, "text", {}) and not out.getexif()
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP", b"secret"):
        assert chunk not in photo.data


def test_an_opaque_png_becomes_rgb_and_a_palette_with_transparency_rgba() -> None:
    assert _open(process(_png(_halves((40, 40), "RGB")), "image/png")).mode == "RGB"
    palette = Image.new("P", (40, 40), 0)
    assert _open(process(_png(palette, transparency=0), "image/png")).mode == "RGBA"


def test_large_images_are_brought_down_to_the_longest_side() -> None:
    photo = process(_png(_halves((3000, 1500))), "image/png")
    assert _open(photo).size == (MAX_SIDE, MAX_SIDE // 2)
    photo = process(_jpeg(_halves((1000, 4000))), "image/jpeg")
    assert _open(photo).size == (256, MAX_SIDE)
    # Small ones keep their size: nothing is enlarged.
    assert _open(process(_jpeg(_halves((64, 48))), "image/jpeg")).size == (64, 48)


def test_the_same_upload_gives_the_same_digest_and_another_one_another() -> None:
    a, b = _png(_halves((50, 50))), _png(_halves((51, 50)))
    assert process(a, "image/png").digest == process(a, "image/png").digest
    assert process(a, "image/png").digest != process(b, "image/png").digest


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an image",
        b"\xff\xd8\xff\xe0" + b"\x00" * 100,  # a JPEG's first bytes, then nothing
        random.Random(7).randbytes(5000),
    ],
)
def test_garbage_is_an_invalid_image(data: bytes) -> None:
    for declared in ("image/jpeg", "image/png"):
        with pytest.raises(InvalidImage) as caught:
            process(data, declared)
        assert (caught.value.code, caught.value.status) == ("invalid_image", 422)


def test_a_truncated_jpeg_is_an_invalid_image() -> None:
    data = _jpeg(_noise((400, 300)))
    assert process(data, "image/jpeg").content_type == "image/jpeg"  # whole: fine
    with pytest.raises(InvalidImage):
        process(data[: len(data) // 2], "image/jpeg")


def test_a_png_with_a_broken_checksum_is_an_invalid_image() -> None:
    data = bytearray(_png(_noise((60, 60))))
    data[-20] ^= 0xFF  # inside the last IDAT: its CRC no longer matches
    with pytest.raises(InvalidImage):
        process(bytes(data), "image/png")


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (8000, 6000),  # 48 Mpx: over our limit, under Pillow's own
        (10_000, 10_000),  # over Pillow's warning threshold (an error under pytest)
        (100_000, 100_000),  # over Pillow's hard limit
    ],
)
def test_a_decompression_bomb_is_refused_before_decoding(width: int, height: int) -> None:
    data = _png_declaring(width, height)
    assert len(data) < 200 and width * height > MAX_PIXELS
    with pytest.raises(InvalidImage):
        process(data, "image/png")


def test_over_two_mib_is_too_large() -> None:
    with pytest.raises(TooLarge) as caught:
        process(b"\xff" * (MAX_BYTES + 1), "image/jpeg")
    assert (caught.value.code, caught.value.status) == ("too_large", 413)


def test_the_declared_type_must_be_jpeg_or_png_and_match_the_bytes() -> None:
    png, jpeg = _png(_halves((30, 30))), _jpeg(_halves((30, 30)))
    for declared in ("image/gif", "image/webp", "text/plain", "", "image/jpg", "image/svg+xml"):
        with pytest.raises(InvalidImage):
            process(png, declared)
    # The bytes must be what the header says: no sniffing.
    with pytest.raises(InvalidImage):
        process(png, "image/jpeg")
    with pytest.raises(InvalidImage):
        process(jpeg, "image/png")
    gif = io.BytesIO()
    _halves((30, 30)).save(gif, "GIF")
    with pytest.raises(InvalidImage):
        process(gif.getvalue(), "image/png")
    # Parameters and case do not matter.
    assert process(png, "Image/PNG; charset=binary").content_type == "image/png"


# -- photos.store.Photos (SQLite and PostgreSQL) -------------------------------------------


async def test_the_store_keeps_one_photo_per_therapist(db: Database) -> None:
    photos = Photos(db)
    assert await photos.get("t1") is None
    first = process(_png(_halves((40, 40))), "image/png")
    second = process(_jpeg(_halves((50, 40))), "image/jpeg")
    await photos.put("t1", first, 1_700_000_000.0)
    assert await photos.get("t1") == first
    await photos.put("t1", second, 1_700_000_100.0)  # replaces
    assert await photos.get("t1") == second
    assert await photos.get("t2") is None


# -- HTTP ----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    overrides = embedded_settings(request, tmp_path, secret=SECRET)
    with TestClient(create_app(load_settings(overrides, env={}))) as c:
        for tid in ("t1", "t2"):
            r = c.put(f"/v1/therapists/{tid}", json=PROFILE, headers=_h("operator", "op"))
            assert r.status_code in (200, 201), r.text
        yield c


def _h(role: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(SECRET, role, sub)}"}


def _put(
    c: TestClient,
    tid: str,
    data: Any,
    content_type: str = "image/jpeg",
    who: tuple[str, str] | None = None,
) -> Any:
    role, sub = who or ("therapist", tid)
    headers = {"Content-Type": content_type, **_h(role, sub)}
    return c.put(f"/v1/therapists/{tid}/photo", content=data, headers=headers)


def _error(r: Any) -> str:
    code: str = r.json()["error"]["code"]
    return code


def test_a_therapist_uploads_its_photo_and_anyone_can_load_it(client: TestClient) -> None:
    upload = _jpeg(_halves((200, 100)), exif=_exif_with_gps(orientation=6))
    r = _put(client, "t1", upload)
    assert r.status_code == 200, r.text
    body = r.json()
    url = body["photo_url"]
    assert url.startswith("/v1/therapists/t1/photo?v=")
    digest = url.rsplit("=", 1)[1]
    assert len(digest) == 16
    # The full profile, as PATCH answers; the rest of it untouched.
    assert body["name"] == PROFILE["name"] and body["regions"] == PROFILE["regions"]
    assert {"phone", "email", "sms_opt_in"} <= set(body)
    seen = client.get("/v1/therapists/t1", headers=_h("client", "c1")).json()
    assert seen["photo_url"] == url

    got = client.get(url)  # no token: an <img> sends none
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["etag"] == f'"{digest}"'
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert hashlib.sha256(got.content).hexdigest()[:16] == digest
    served = Image.open(io.BytesIO(got.content))
    assert served.size == (100, 200) and not served.getexif()
    assert b"SecretCam" not in got.content

    # Without the version (or with an old one): revalidate every time.
    plain = client.get("/v1/therapists/t1/photo")
    assert plain.status_code == 200 and plain.headers["cache-control"] == "no-cache"
    assert plain.content == got.content
    # Revalidation.
    for tag in (f'"{digest}"', f'W/"{digest}"', f'"other", "{digest}"', "*"):
        again = client.get(url, headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == f'"{digest}"'
    assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_a_new_upload_gets_a_new_url(client: TestClient) -> None:
    first = _put(client, "t1", _jpeg(_halves((80, 60)))).json()["photo_url"]
    r = _put(client, "t1", _png(_halves((60, 80), "RGBA")), "image/png")
    assert r.status_code == 200, r.text
    second = r.json()["photo_url"]
    assert second != first
    got = client.get(second)
    assert got.headers["content-type"] == "image/png"
    # The old link now shows the new photo, and may not be cached for good.
    old = client.get(first)
    assert old.status_code == 200 and old.content == got.content
    assert old.headers["cache-control"] == "no-cache"
    assert client.get(first, headers={"If-None-Match": old.headers["etag"]}).status_code == 304


def test_who_may_upload(client: TestClient) -> None:
    jpeg = _jpeg(_halves((40, 40)))
    r = _put(client, "t1", jpeg, who=("therapist", "t2"))
    assert r.status_code == 403 and _error(r) == "forbidden"
    r = _put(client, "t1", jpeg, who=("client", "c1"))
    assert r.status_code == 403 and _error(r) == "forbidden"
    r = client.put("/v1/therapists/t1/photo", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 401 and _error(r) == "unauthorized"
    assert client.get("/v1/therapists/t1/photo").status_code == 404  # nothing landed
    # An operator may, for any therapist.
    r = _put(client, "t2", jpeg, who=("operator", "op"))
    assert r.status_code == 200 and r.json()["photo_url"].startswith("/v1/therapists/t2/photo?v=")
    # No such therapist: neither its own upload nor an operator's.
    r = _put(client, "t9", jpeg)
    assert r.status_code == 404 and _error(r) == "not_found"
    assert _put(client, "t9", jpeg, who=("operator", "op")).status_code == 404
    assert client.get("/v1/therapists/t9/photo").status_code == 404


def test_bad_uploads(client: TestClient) -> None:
    r = _put(client, "t1", b"just some text, not an image")
    assert r.status_code == 422 and _error(r) == "invalid_image"
    r = _put(client, "t1", _png(_halves((40, 40))), "text/plain")
    assert r.status_code == 422 and _error(r) == "invalid_image"
    r = _put(client, "t1", _png(_halves((40, 40))), "image/jpeg")  # not what it says
    assert r.status_code == 422 and _error(r) == "invalid_image"
    r = _put(client, "t1", _png_declaring(20_000, 20_000), "image/png")
    assert r.status_code == 422 and _error(r) == "invalid_image"
    # 2 MiB + 1: refused by its Content-Length...
    r = _put(client, "t1", b"\xff" * (MAX_BYTES + 1))
    assert r.status_code == 413 and _error(r) == "too_large"
    # ... and without one (chunked), while streaming.
    chunks = iter([b"\xff" * (1024 * 1024)] * 3)
    r = _put(client, "t1", chunks)
    assert r.status_code == 413 and _error(r) == "too_large"
    assert client.get("/v1/therapists/t1/photo").status_code == 404
    profile = client.get("/v1/therapists/t1", headers=_h("therapist", "t1")).json()
    assert profile["photo_url"] == ""
    # Exactly 2 MiB is not too large (it is just not an image).
    r = _put(client, "t1", b"\xff" * MAX_BYTES)
    assert r.status_code == 422 and _error(r) == "invalid_image"


def test_a_bad_id_is_422(client: TestClient) -> None:
    r = client.get("/v1/therapists/" + "x" * 65 + "/photo")
    assert r.status_code == 422 and _error(r) == "invalid_field"
