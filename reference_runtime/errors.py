"""The base of every reference_runtime error worded for the user (the CLI prints it as one line)."""


class ReferenceRuntimeError(Exception):
    """Bad input to the model side: a GGUF file, a corpus, a token sequence, a basket model."""


class DeviceTooSmall(ReferenceRuntimeError):
    """The GPU has less free memory than a basket model's evaluation needs (checked before loading)."""
