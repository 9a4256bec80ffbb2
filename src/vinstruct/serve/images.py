"""Images named in API requests: data URLs, local files under allowed directories, remote URLs.

Every way in is closed unless it is safe or switched on: data URLs must hold a
real PNG, JPEG or WebP; a local path is read only when it resolves (symlinks
followed) inside a directory given with `--allow-dir`; http(s) URLs are fetched
only with `--allow-remote-images`, with a size cap.

Sizes are checked from the header before pixels are decoded, so an oversized
image costs nothing. They count the pixels of the image as it will be processed:
a 1x16000 strip is tiny as a file, but padded to a square it is 16000x16000, and
that (about 13 bytes per pixel while the processor works) is what the server
would have to hold. Very elongated images are refused too. Whatever goes wrong
inside a decoder is the data's fault: a 400, never a server error.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
from PIL import Image

from vinstruct.data.images import ImageProcessor
from vinstruct.errors import VinstructError

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
BOMB_SIZE = re.compile(r"Image size \((\d+) pixels\)")
DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*?);base64,(?P<data>.*)$", re.DOTALL)


class ImageInputError(VinstructError):
    """A request's image cannot be used; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_image"):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class ImagePolicy:
    allow_dirs: list[Path] = field(default_factory=list)
    allow_remote: bool = False
    max_pixels: int = 4096 * 4096  # per image, as processed (after padding to a square or resizing)
    max_aspect: float = 50.0  # longest side / shortest side
    max_download_bytes: int = 20 * 1024 * 1024
    remote_timeout_s: float = 10.0

    def __post_init__(self):
        self.allow_dirs = [Path(d).resolve() for d in self.allow_dirs]


def processed_pixels(width: int, height: int, processor: ImageProcessor | None) -> int:
    """Pixels the image occupies at its largest while being processed (the decoded size if unknown)."""
    return width * height if processor is None else processor.working_pixels(width, height)


def check_size(width: int, height: int, where: str, policy: ImagePolicy, processor: ImageProcessor | None) -> int:
    """Refuse an image too large (413) or too elongated (400) from its header size; return its processed pixels."""
    pixels = processed_pixels(width, height, processor)
    if pixels > policy.max_pixels:
        how = "" if pixels == width * height else f", {pixels} pixels once {processor.aspect_description}"
        raise ImageInputError(
            f"{where}: image is {width}x{height} = {width * height} pixels{how}, over the limit of {policy.max_pixels}",
            status=413, code="image_too_large",
        )
    if max(width, height) > policy.max_aspect * max(min(width, height), 1):
        raise ImageInputError(f"{where}: image is {width}x{height}, more elongated than the limit of "
                              f"{policy.max_aspect:g}:1 between its sides")
    return pixels


def decode_image_bytes(data: bytes, where: str, policy: ImagePolicy, processor: ImageProcessor | None = None
                       ) -> Image.Image:
    """Open PNG/JPEG/WebP bytes as RGB after checking the format and the size the image will be processed at."""
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError as err:  # a header claiming billions of pixels
        found = BOMB_SIZE.search(str(err))
        size = f"{found[1]} pixels" if found else "more pixels than the decoder accepts"
        raise ImageInputError(f"{where}: image header declares {size}, over the limit of {policy.max_pixels}",
                              status=413, code="image_too_large") from None
    except Exception:  # any decoder's complaint about the header means the same thing
        raise ImageInputError(f"{where}: the data is not an image (expected PNG, JPEG or WebP)") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageInputError(f"{where}: image is {width}x{height}, which has no pixels")
    check_size(width, height, where, policy, processor)
    try:
        image.load()
        return image.convert("RGB")
    except MemoryError:
        raise
    except Exception as err:  # SyntaxError, zlib.error, EOFError, OSError...: damaged data, not a server fault
        raise ImageInputError(f"{where}: the {FORMATS[image.format]} data cannot be decoded, it is damaged or "
                              f"unsupported ({type(err).__name__}: {err})") from None


def _from_data_url(url: str, where: str, policy: ImagePolicy, processor) -> Image.Image:
    match = DATA_URL.match(url)
    if match is None:
        raise ImageInputError(f"{where}: a data URL must look like data:image/png;base64,<data>")
    mime = match["mime"].lower()
    if mime not in ("image/png", "image/jpeg", "image/jpg", "image/webp"):
        raise ImageInputError(f"{where}: data URL type {mime or '(none)'!r} is not image/png, image/jpeg or image/webp")
    try:
        data = base64.b64decode(re.sub(r"\s+", "", match["data"]), validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(f"{where}: invalid base64 in the data URL") from None
    return decode_image_bytes(data, where, policy, processor)


def _from_path(raw: str, where: str, policy: ImagePolicy, processor) -> Image.Image:
    if not policy.allow_dirs:
        raise ImageInputError(
            f"{where}: local image paths are disabled; send a data URL or start the server with --allow-dir DIR",
            status=403, code="path_not_allowed",
        )
    path = Path(unquote(urlparse(raw).path) if raw.startswith("file:") else raw).resolve()
    if not any(path.is_relative_to(d) for d in policy.allow_dirs):
        raise ImageInputError(f"{where}: {path} is outside the allowed image directories", 403, "path_not_allowed")
    if not path.is_file():
        raise ImageInputError(f"{where}: image file not found: {path}", 404, "image_not_found")
    return decode_image_bytes(path.read_bytes(), where, policy, processor)


def _from_remote(url: str, where: str, policy: ImagePolicy, processor) -> Image.Image:
    if not policy.allow_remote:
        raise ImageInputError(
            f"{where}: remote image URLs are refused by this server; send the image as a data URL "
            "(data:image/png;base64,...) or start the server with --allow-remote-images",
            status=400, code="remote_images_disabled",
        )
    try:
        with httpx.stream("GET", url, timeout=policy.remote_timeout_s, follow_redirects=True) as response:
            if response.status_code != 200:
                raise ImageInputError(f"{where}: fetching {url} gave HTTP {response.status_code}")
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > policy.max_download_bytes:
                    raise ImageInputError(
                        f"{where}: {url} is larger than {policy.max_download_bytes} bytes", 413, "image_too_large"
                    )
    except httpx.HTTPError as err:
        raise ImageInputError(f"{where}: cannot fetch {url} ({type(err).__name__}: {err})") from None
    return decode_image_bytes(bytes(data), where, policy, processor)


def load_image_url(url: str, where: str, policy: ImagePolicy, processor: ImageProcessor | None = None
                   ) -> Image.Image:
    """The image an OpenAI `image_url.url` names, as RGB, or an ImageInputError saying why not.

    With `processor`, size limits count the image as that processor will handle it (padded, resized).
    """
    if not isinstance(url, str) or not url:
        raise ImageInputError(f"{where}: expected a non-empty URL string")
    scheme = urlparse(url).scheme.lower() if "://" in url or url.startswith("data:") else ""
    if scheme == "data":
        return _from_data_url(url, where, policy, processor)
    if scheme in ("http", "https"):
        return _from_remote(url, where, policy, processor)
    if scheme in ("", "file"):
        return _from_path(url, where, policy, processor)
    raise ImageInputError(f"{where}: unsupported URL scheme {scheme!r} (use a data URL)")


def image_data_url(path: str | Path) -> str:
    """A data URL for an image file (what clients send; used by tests and examples)."""
    path = Path(path)
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
        path.suffix.lower(), "image/png"
    )
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
