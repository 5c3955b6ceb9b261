"""What storage/blobs/media.py says about bytes and names, and the BOARDCAST_BLOB_* settings."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from server.config import DEFAULT_BLOB_TYPES, ConfigError, load_settings
from storage.blobs.media import (
    MediaTypeRefused,
    ThumbnailError,
    check_type,
    content_disposition,
    make_thumbnail,
    safe_filename,
    sniff,
)


def _image(fmt: str, size: tuple[int, int] = (640, 480), mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_image("PNG"), "image/png"),
        (_image("JPEG"), "image/jpeg"),
        (_image("GIF"), "image/gif"),
        (b"%PDF-1.5\n...", "application/pdf"),
        (b"plain words\n", "text/plain"),
        ("héllo wörld".encode(), "text/plain"),
        ("ab€".encode()[:-1], "text/plain"),  # cut inside a character at the end of the head
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>", "text/plain"),
        (b"\x00\x01\x02binary", "application/octet-stream"),
        (b"\xff\xfe\xfa not utf-8 at all, and long enough to tell", "application/octet-stream"),
        (b"", "text/plain"),
    ],
)
def test_sniff(data: bytes, expected: str) -> None:
    assert sniff(data) == expected


def test_check_type() -> None:
    allowed = DEFAULT_BLOB_TYPES
    assert check_type("image/png", None, allowed) == "image/png"
    assert check_type("image/png", "image/png; charset=binary", allowed) == "image/png"
    assert check_type("image/jpeg", "image/jpg", allowed) == "image/jpeg"  # an alias
    assert check_type("image/png", "application/octet-stream", allowed) == "image/png"
    assert check_type("text/plain", "text/markdown", allowed) == "text/plain"
    assert check_type("application/zip", "application/epub+zip", allowed) == "application/zip"
    with pytest.raises(MediaTypeRefused, match="declared as image/png"):
        check_type("application/pdf", "image/png", allowed)
    with pytest.raises(MediaTypeRefused, match="may not be uploaded"):
        check_type("application/x-msdownload", None, allowed)
    with pytest.raises(MediaTypeRefused):
        check_type("application/octet-stream", None, allowed)  # unknown binary: not by default
    assert check_type("application/octet-stream", None, ("application/*",)) == "application/octet-stream"
    assert check_type(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document", None, allowed
    ).endswith("document")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("photo.png", "photo.png"),
        ("C:\\Users\\ann\\photo.png", "photo.png"),
        ("/etc/passwd", "passwd"),
        ("..", "file"),
        ("a\x00b\x1fc.txt", "abc.txt"),
        ("e\u0301tude.txt", "\u00e9tude.txt"),  # NFC
        ("no\u00a0break.txt", "no break.txt"),
        ("line\u2028sep.txt", "linesep.txt"),
        ("nul", "_nul"),
        ("LPT1.log", "_LPT1.log"),
        (None, "file"),
        ("a" * 250, "a" * 200),
        ("b" * 250 + ".tar.gz", "b" * 197 + ".gz"),
    ],
)
def test_safe_filename(raw: str | None, expected: str) -> None:
    assert safe_filename(raw) == expected


def test_content_disposition_is_safe_for_any_name() -> None:
    header = content_disposition('évil"; filename="x.html\r\nSet-Cookie: a=b', inline=False)
    assert "\r" not in header and "\n" not in header
    assert header.startswith('attachment; filename="_vil__ filename=_x.htmlSet-Cookie_ a=b"; ')
    assert header.endswith("filename*=UTF-8''%C3%A9vil__%20filename%3D_x.htmlSet-Cookie_%20a%3Db")
    assert content_disposition("p.png", inline=True).startswith("inline;")


def test_thumbnails_of_real_images() -> None:
    jpeg = make_thumbnail(io.BytesIO(_image("JPEG", (2000, 1000))))
    assert (jpeg.content_type, jpeg.width, jpeg.height) == ("image/jpeg", 320, 160)
    assert Image.open(io.BytesIO(jpeg.data)).format == "JPEG"
    png = make_thumbnail(io.BytesIO(_image("PNG", (100, 400), "RGBA")))
    assert (png.content_type, png.width, png.height) == ("image/png", 80, 320)
    small = make_thumbnail(io.BytesIO(_image("PNG", (40, 30))))
    assert (small.width, small.height) == (40, 30)  # never enlarged


def test_no_thumbnail_of_broken_or_huge_images() -> None:
    with pytest.raises(ThumbnailError):
        make_thumbnail(io.BytesIO(b"\x89PNG\r\n\x1a\n not really"))
    # 56 million pixels: over our limit, refused before anything is decoded
    big = io.BytesIO()
    Image.new("1", (8_000, 7_000)).save(big, "PNG")
    with pytest.raises(ThumbnailError, match="too large"):
        make_thumbnail(io.BytesIO(big.getvalue()))
    # 400 million: Pillow's own decompression-bomb guard
    huge = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(huge, "PNG")
    with pytest.raises(ThumbnailError, match="decompression bomb"):
        make_thumbnail(io.BytesIO(huge.getvalue()))


def test_blob_settings() -> None:
    s = load_settings({})
    assert s.blob_store == "local" and s.blob_root == s.data_dir / "blobs"
    s = load_settings(
        {
            "BOARDCAST_BLOB_STORE": "s3",
            "BOARDCAST_BLOB_S3_BUCKET": "files",
            "BOARDCAST_BLOB_S3_ENDPOINT_URL": "http://minio:9000",
            "BOARDCAST_BLOB_ALLOWED_TYPES": "image/*, Application/PDF",
            "BOARDCAST_BLOB_S3_PREFIX": "boardcast/",
        }
    )
    assert s.blob_allowed_types == ("image/*", "application/pdf") and s.blob_s3_bucket == "files"
    assert "secret" not in repr(
        load_settings(
            {"BOARDCAST_BLOB_S3_ACCESS_KEY_ID": "k", "BOARDCAST_BLOB_S3_SECRET_ACCESS_KEY": "secret"}
        )
    )
    refused = {
        "BOARDCAST_BLOB_STORE": "ftp",
        "BOARDCAST_BLOB_MAX_BYTES": "0",
        "BOARDCAST_BLOB_ALLOWED_TYPES": "images",
        "BOARDCAST_BLOB_S3_ENDPOINT_URL": "minio:9000",
        "BOARDCAST_BLOB_S3_PREFIX": "../up/",
        "BOARDCAST_BLOB_URL_TTL_S": "-1",
    }
    for var, raw in refused.items():
        with pytest.raises(ConfigError, match=var):
            load_settings({var: raw})
    with pytest.raises(ConfigError, match="BOARDCAST_BLOB_S3_BUCKET"):
        load_settings({"BOARDCAST_BLOB_STORE": "s3"})
    with pytest.raises(ConfigError, match="go together"):
        load_settings({"BOARDCAST_BLOB_S3_ACCESS_KEY_ID": "k"})
