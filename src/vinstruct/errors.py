"""Errors that the command line turns into one-line messages and a non-zero exit."""


class VinstructError(Exception):
    """A user-facing error: bad input, a missing file, an impossible request.

    The message is meant to be printed as is, on one line, naming the file,
    line or field at fault and what was expected.
    """


class BadSampleError(VinstructError):
    """A training/eval sample that cannot be used (names the sample id)."""

    def __init__(self, sample_id, reason):
        self.sample_id = sample_id
        self.reason = reason
        super().__init__(f"sample {sample_id!r}: {reason}")
