"""`vinstruct demo`: the whole method end to end on the embedded shapes world (see pipeline.py)."""

from vinstruct.demo.pipeline import run_demo
from vinstruct.demo.settings import PRESETS, DemoSettings, preset

__all__ = ["run_demo", "DemoSettings", "PRESETS", "preset"]
