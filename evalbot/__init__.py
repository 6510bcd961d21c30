"""evalbot: builds, checks and scores CUDA decode-kernel pull requests."""

__version__ = "0.1.0"
