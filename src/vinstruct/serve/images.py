"""Images named in API requests: data URLs, local files under allowed directories, remote URLs.

Every way in is closed unless it is safe or switched on: data URLs must hold a
real PNG, JPEG or WebP; a local path is read only when it resolves (symlinks
followed) inside a directory given with `--allow-dir`; http(s) URLs are fetched
only with `--allow-remote-images`, with a size cap. Sizes are checked from the
header before pixels are decoded, so an oversized image costs nothing.
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
from PIL import Image, UnidentifiedImageError

from vinstruct.errors import VinstructError

FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
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
    max_pixels: int = 4096 * 4096  # per image
    max_download_bytes: int = 20 * 1024 * 1024
    remote_timeout_s: float = 10.0

    def __post_init__(self):
        self.allow_dirs = [Path(d).resolve() for d in self.allow_dirs]


def decode_image_bytes(data: bytes, where: str, policy: ImagePolicy) -> Image.Image:
    """Open PNG/JPEG/WebP bytes as RGB after checking the format and the pixel count."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise ImageInputError(f"{where}: the data is not an image (expected PNG, JPEG or WebP)") from None
    if image.format not in FORMATS:
        raise ImageInputError(f"{where}: unsupported image format {image.format} (expected PNG, JPEG or WebP)")
    width, height = image.size
    if width * height > policy.max_pixels:
        raise ImageInputError(
            f"{where}: image is {width}x{height} = {width * height} pixels, over the limit of {policy.max_pixels}",
            status=413, code="image_too_large",
        )
    try:
        image.load()
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageInputError(f"{where}: the {FORMATS[image.format]} data is damaged ({err})") from None
    return image.convert("RGB")


def _from_data_url(url: str, where: str, policy: ImagePolicy) -> Image.Image:
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
    return decode_image_bytes(data, where, policy)


def _from_path(raw: str, where: str, policy: ImagePolicy) -> Image.Image:
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
    return decode_image_bytes(path.read_bytes(), where, policy)


def _from_remote(url: str, where: str, policy: ImagePolicy) -> Image.Image:
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
    return decode_image_bytes(bytes(data), where, policy)


def load_image_url(url: str, where: str, policy: ImagePolicy) -> Image.Image:
    """The image an OpenAI `image_url.url` names, as RGB, or an ImageInputError saying why not."""
    if not isinstance(url, str) or not url:
        raise ImageInputError(f"{where}: expected a non-empty URL string")
    scheme = urlparse(url).scheme.lower() if "://" in url or url.startswith("data:") else ""
    if scheme == "data":
        return _from_data_url(url, where, policy)
    if scheme in ("http", "https"):
        return _from_remote(url, where, policy)
    if scheme in ("", "file"):
        return _from_path(url, where, policy)
    raise ImageInputError(f"{where}: unsupported URL scheme {scheme!r} (use a data URL)")


def image_data_url(path: str | Path) -> str:
    """A data URL for an image file (what clients send; used by tests and examples)."""
    path = Path(path)
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}.get(
        path.suffix.lower(), "image/png"
    )
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
