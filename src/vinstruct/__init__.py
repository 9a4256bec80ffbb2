"""vinstruct: Visual Instruction Tuning (LLaVA) you can run.

Public entry points are kept small; import heavy modules lazily so that
`vinstruct --help` stays fast.
"""

__version__ = "0.1.0"


def load(path, **kwargs):
    """Load a model directory (see `vinstruct.model.io.load_model`)."""
    from vinstruct.model.io import load_model

    return load_model(path, **kwargs)


from_pretrained = load
