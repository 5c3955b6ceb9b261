"""What is known about a blob's bytes: its media type sniffed from them, a safe file name, the
Content-Disposition to serve it with, and thumbnails of images. No I/O but the temporary file a
thumbnail is made from."""

from __future__ import annotations

import io
import re
import unicodedata
import warnings
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote

import filetype
from PIL import Image, ImageOps

SNIFF_BYTES = 8192  # enough for every signature the sniffer knows, OOXML's included
OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"

# What a browser may show in place (a raster image cannot run script); everything else is
# served as a download. SVG and HTML never get here as such: the sniffer sees them as text.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
THUMBNAIL_SOURCES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff"}
)

_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
# Containers that are ZIP files inside, sniffed as application/zip when their own signature
# is further in than the sniffer looks.
_ZIP_BASED = ("application/vnd.openxmlformats-officedocument.", "application/vnd.oasis.opendocument.")
_ZIP_BASED_EXACT = frozenset({"application/epub+zip", "application/java-archive"})


class MediaTypeRefused(ValueError):
    """The content is not what was declared, or not a type that may be uploaded."""

    def __init__(self, message: str, *, sniffed: str, declared: str | None) -> None:
        super().__init__(message)
        self.sniffed = sniffed
        self.declared = declared


def sniff(head: bytes) -> str:
    """The media type of content starting with ``head`` (up to :data:`SNIFF_BYTES`): a known
    signature, else ``text/plain`` for UTF-8 text without NUL, else ``application/octet-stream``."""
    kind = filetype.guess(head)
    if kind is not None:
        return str(kind.mime)
    if b"\x00" in head:
        return OCTET_STREAM
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        # the head may end inside a character; anything earlier is not text
        if e.start < len(head) - 3:
            return OCTET_STREAM
    return TEXT


def _essence(declared: str | None) -> str | None:
    if declared is None:
        return None
    media = declared.split(";", 1)[0].strip().lower()
    return _ALIASES.get(media, media) or None


def check_type(sniffed: str, declared: str | None, allowed: tuple[str, ...]) -> str:
    """The type to store for content sniffed as ``sniffed`` that the client declared as
    ``declared`` (None: nothing said). Refused if the two disagree or the type is not in
    ``allowed`` (exact types, ``type/*`` and ``type/prefix*`` patterns)."""
    essence = _essence(declared)
    if essence not in (None, OCTET_STREAM, sniffed) and not _compatible(sniffed, essence):
        raise MediaTypeRefused(
            f"the file was declared as {essence} but its content is {sniffed}",
            sniffed=sniffed,
            declared=essence,
        )
    if not type_allowed(sniffed, allowed):
        raise MediaTypeRefused(
            f"files of type {sniffed} may not be uploaded", sniffed=sniffed, declared=essence
        )
    return sniffed


def _compatible(sniffed: str, declared: str) -> bool:
    if sniffed == TEXT:  # CSV, Markdown, JSON...: stored and served as plain text
        return declared.startswith("text/") or declared in ("application/json", "application/xml")
    if sniffed == "application/zip":
        return declared.startswith(_ZIP_BASED) or declared in _ZIP_BASED_EXACT
    return False


def type_allowed(media: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern.endswith("*"):
            if media.startswith(pattern[:-1]):
                return True
        elif media == pattern:
            return True
    return False


# ------------------------------------------------------------------ names

_UNSAFE = re.compile(r'[<>:"/\\|?*;]')
_SPACES = re.compile(r"\s+")
_WINDOWS_RESERVED = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.I)
MAX_NAME_CHARS = 200


def safe_filename(raw: str | None, fallback: str = "file") -> str:
    """A file name fit to show and to offer in Content-Disposition: the last path component,
    NFC, without control or format characters (bidi overrides included), without characters
    that file systems or headers treat specially, at most 200 characters (the extension kept).
    It is never used as a storage path: blob keys are the server's own."""
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(map(_visible, name))
    name = _SPACES.sub(" ", _UNSAFE.sub("_", name)).strip(" .")
    if _WINDOWS_RESERVED.fullmatch(name):
        name = "_" + name
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_NAME_CHARS - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:MAX_NAME_CHARS].rstrip(" .")
    return name or fallback


def _visible(ch: str) -> str:
    category = unicodedata.category(ch)
    if category == "Zs":
        return " "
    return "" if category[0] in ("C", "Z") else ch  # controls, formats (bidi), line separators


def content_disposition(filename: str, *, inline: bool) -> str:
    """RFC 6266: an ASCII ``filename`` for old clients and the exact name as ``filename*``."""
    name = safe_filename(filename)
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


# ------------------------------------------------------------------ thumbnails

THUMBNAIL_PX = 320
MAX_SOURCE_PIXELS = 50_000_000  # larger images get no thumbnail (decompression bombs)


class ThumbnailError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Thumbnail:
    data: bytes
    content_type: str
    width: int
    height: int


def make_thumbnail(source: BinaryIO, max_px: int = THUMBNAIL_PX) -> Thumbnail:
    """A thumbnail fitting in ``max_px`` by ``max_px`` pixels: PNG where the image has transparency,
    JPEG otherwise. CPU-bound: call it in a thread. :class:`ThumbnailError` for anything
    Pillow cannot or must not decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                if im.width * im.height > MAX_SOURCE_PIXELS:
                    raise ThumbnailError(f"image of {im.width}x{im.height} pixels is too large")
                im.draft("RGB", (max_px, max_px))  # JPEG: decode at a reduced scale
                im.seek(0)
                frame = ImageOps.exif_transpose(im)
                alpha = frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info
                frame = frame.convert("RGBA" if alpha else "RGB")
                frame.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                if alpha:
                    frame.save(out, "PNG", optimize=True)
                else:
                    frame.save(out, "JPEG", quality=85, optimize=True)
                return Thumbnail(out.getvalue(), "image/png" if alpha else "image/jpeg", *frame.size)
    except ThumbnailError:
        raise
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        EOFError,
    ) as e:
        raise ThumbnailError(f"cannot make a thumbnail: {e}") from e
