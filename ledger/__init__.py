"""The public, append-only, signed evaluation ledger."""
