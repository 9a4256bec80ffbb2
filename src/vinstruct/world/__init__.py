"""The shapes world: procedurally generated scenes written as a COCO-format dataset.

    from vinstruct.world import generate_world, load_manifest
    manifest = generate_world("runs/world", images=2000, seed=0, size=64)
    manifest = load_manifest("runs/world")   # checks the directory is complete
"""

from vinstruct.world.generate import generate_world
from vinstruct.world.manifest import load_manifest

__all__ = ["generate_world", "load_manifest"]
