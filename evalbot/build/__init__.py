"""Sandboxed, cached compilation of contributors' kernel slots to cubins (see docs/build.md)."""
