"""Bounded capture of a compiler's output: a build may print at most ``limit`` bytes.

Candidates control what the compiler prints (``#warning`` in a loop, a template error cascade), so
the output is never held whole: the first ``limit`` bytes are kept and the caller is told the moment
the limit is passed, so it can stop the build instead of draining an endless stream.
"""

from __future__ import annotations


class LogCapture:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self._kept = bytearray()

    @property
    def overflowed(self) -> bool:
        return self.total > self.limit

    def feed(self, chunk: bytes) -> bool:
        """Record ``chunk``; False once the output has gone past the limit (the build should stop)."""
        room = self.limit - len(self._kept)
        if room > 0:
            self._kept += chunk[:room]
        self.total += len(chunk)
        return not self.overflowed

    def text(self) -> str:
        text = self._kept.decode("utf-8", "replace")
        if self.overflowed:
            text += f"\n[evalbot: output cut at the {self.limit}-byte log limit; the build was stopped]\n"
        return text
