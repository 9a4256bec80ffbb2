"""Images in API requests: any damage is a clean refusal, and size limits count the image as processed."""

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vinstruct.data.images import ImageProcessor
from vinstruct.serve.images import ImageInputError, ImagePolicy, decode_image_bytes


@pytest.fixture(scope="module")
def processor(tiny_checkpoint):
    """The tiny checkpoint's processor: pads to a square, then resizes to 32 x 32."""
    return ImageProcessor.from_pretrained(tiny_checkpoint, aspect="pad")


def _encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.effect_noise((40, 24), 50).convert("RGB").save(out, fmt)
    return out.getvalue()


ORIGINALS = {fmt: _encoded(fmt) for fmt in ("PNG", "JPEG", "WEBP")}


@st.composite
def damaged_images(draw):
    """A valid PNG, JPEG or WebP with bytes overwritten, cut off, or inserted."""
    data = bytearray(ORIGINALS[draw(st.sampled_from(sorted(ORIGINALS)))])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["overwrite", "cut", "insert"]))
        if how == "overwrite":
            data[at:at + 4] = draw(st.binary(min_size=1, max_size=4))
        elif how == "cut":
            del data[at:]
            if not data:
                break
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=damaged_images())
def test_a_damaged_image_is_decoded_or_refused_with_a_4xx_never_an_exception(processor, data):
    try:
        image = decode_image_bytes(data, "url", ImagePolicy(), processor)
    except ImageInputError as err:
        assert 400 <= err.status < 500 and str(err).startswith("url: ")
    else:
        assert image.mode == "RGB" and image.width >= 1 and image.height >= 1


@pytest.mark.parametrize("aspect, size, pixels", [
    ("pad", (1, 16000), 16000 * 16000),  # the square it is padded to
    ("pad", (640, 480), 640 * 640),
    ("pad", (4, 3), 32 * 32),  # small images are scaled up to the input size
    ("crop", (1, 16000), 32 * 32 * 16000),  # shortest side resized to 32 before the crop
    ("crop", (640, 480), 640 * 480),
    ("resize", (1, 16000), 16000),  # squashed straight to 32 x 32
])
def test_working_pixels_count_the_image_as_the_processor_will_hold_it(tiny_checkpoint, aspect, size, pixels):
    assert ImageProcessor.from_pretrained(tiny_checkpoint, aspect=aspect).working_pixels(*size) == pixels


def test_limits_apply_to_the_padded_size_and_to_the_aspect_ratio(processor):
    def png(width, height):
        out = io.BytesIO()
        Image.new("RGB", (width, height)).save(out, "PNG")
        return out.getvalue()

    policy = ImagePolicy(max_pixels=100 * 100, max_aspect=10)
    assert decode_image_bytes(png(100, 60), "u", policy, processor).size == (100, 60)
    with pytest.raises(ImageInputError, match="101x10 = 1010 pixels, 10201 pixels once padded") as info:
        decode_image_bytes(png(101, 10), "u", policy, processor)
    assert (info.value.status, info.value.code) == (413, "image_too_large")
    with pytest.raises(ImageInputError, match="more elongated than the limit of 10:1") as info:
        decode_image_bytes(png(99, 9), "u", policy, processor)
    assert info.value.status == 400
    # Without a processor (the decoded size is all there is to count) the same strip passes.
    assert decode_image_bytes(png(101, 10), "u", ImagePolicy(max_pixels=100 * 100)).size == (101, 10)
