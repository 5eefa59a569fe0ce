"""Errors of the adapters that a command reports as one line, as it does a wrong address.

Light on purpose: the command line imports it before any engine.
"""

from __future__ import annotations


class EngineStartError(RuntimeError):
    """An engine that failed to start for a reason of its own: what it said, and the likely
    why (Ray's node not registering within its fixed wait on a laptop of 0.25 core)."""
