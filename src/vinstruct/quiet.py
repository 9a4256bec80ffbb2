"""Silence transformers' chatter where we know it is noise.

Loading an image processor from one of our checkpoint directories makes
transformers read our config.json (and complain it is not one of its own), and
the CLIP processor notes that torchvision is absent before using its PIL
backend, which is the backend we ask for anyway.
"""

from __future__ import annotations

import contextlib

from transformers.utils import logging as hf_logging


@contextlib.contextmanager
def quiet_transformers():
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
