"""Image loading and preprocessing, driven by the vision encoder's own processor config.

Aspect handling (config `image_aspect`):
  pad     pad to a square with the processor's mean colour, then resize (LLaVA 1.5 "pad")
  resize  squash to the square input size, no crop
  crop    the processor's default: resize the short side, centre-crop (LLaVA 1.0)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from transformers import AutoImageProcessor

from vinstruct.errors import VinstructError
from vinstruct.quiet import quiet_transformers

# Refuse decompression bombs early; generous for real photos.
Image.MAX_IMAGE_PIXELS = 16_000 * 16_000


def open_image(path: str | os.PathLike, sample_id: str | None = None) -> Image.Image:
    """Open an image file as RGB, or raise a one-line error naming the file (and sample)."""
    who = f"sample {sample_id!r}: " if sample_id is not None else ""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise VinstructError(f"{who}image file not found: {path}") from None
    # SyntaxError and EOFError come from PIL's PNG and GIF readers on damaged chunks.
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
        raise VinstructError(f"{who}cannot decode image {path}: {err}") from None


def pad_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class ImageProcessor:
    """Wraps a transformers image processor and applies the configured aspect mode."""

    def __init__(self, hf_processor, aspect: str = "pad"):
        self.hf = hf_processor
        self.aspect = aspect

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, aspect: str = "pad") -> "ImageProcessor":
        try:
            with quiet_transformers():
                hf = AutoImageProcessor.from_pretrained(str(path), backend="pil")
        except (OSError, ValueError) as err:
            raise VinstructError(f"{path}: cannot load an image processor config ({err})") from None
        return cls(hf, aspect)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.hf.save_pretrained(str(directory))

    @property
    def input_size(self) -> tuple[int, int]:
        crop = getattr(self.hf, "crop_size", None) or self.hf.size
        if "height" in crop:
            return crop["height"], crop["width"]
        side = crop.get("shortest_edge")
        return side, side

    @property
    def mean_color(self) -> tuple[int, int, int]:
        # Truncated, not rounded: the official LLaVA code and transformers' LlavaImageProcessor
        # both pad with int(mean * 255), and pixel-exact parity with them depends on it.
        return tuple(int(x * 255) for x in self.hf.image_mean)

    @property
    def aspect_description(self) -> str:
        return {"pad": "padded to a square", "resize": "resized"}.get(self.aspect, "resized for the centre crop")

    def working_pixels(self, width: int, height: int) -> int:
        """The most pixels an image of this size occupies while it is processed: the decoded image, the
        square it is padded to, or the resized copy, whichever is largest. Memory and time scale with it."""
        if self.aspect == "resize":
            target_height, target_width = self.input_size
            return max(width * height, target_height * target_width)
        if self.aspect == "pad":
            width = height = max(width, height)
        return max(width * height, self._resized_pixels(width, height))

    def _resized_pixels(self, width: int, height: int) -> int:
        """Pixels after the transformers processor's own resize step (before any centre crop)."""
        size = self.hf.size or {}
        if not getattr(self.hf, "do_resize", True):
            return width * height
        if "shortest_edge" in size:
            edge, short, long = size["shortest_edge"], max(min(width, height), 1), max(width, height)
            return edge * -(-edge * long // short)  # the long side scales with the short one (rounded up)
        if "height" in size and "width" in size:
            return size["height"] * size["width"]
        return width * height

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        """Preprocess RGB images into a [N, 3, H, W] float tensor."""
        if not images:
            height, width = self.input_size
            return torch.zeros(0, 3, height, width)
        kwargs = {}
        if self.aspect == "pad":
            images = [pad_to_square(img, self.mean_color) for img in images]
        elif self.aspect == "resize":
            height, width = self.input_size
            images = [img.resize((width, height), Image.BICUBIC) for img in images]
            kwargs = {"do_resize": False, "do_center_crop": False}
        out = self.hf(images=images, return_tensors="pt", **kwargs)
        return out["pixel_values"]

    def load(self, paths: list[str | Path], sample_id: str | None = None) -> torch.Tensor:
        return self([open_image(p, sample_id) for p in paths])
