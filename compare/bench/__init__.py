"""Benchmarks that print figures, not tests: ``smallbig bench overhead`` (the adapters against
each engine's own API, :mod:`.overhead`), ``bench tasks`` (the advice on tasks it was not built
on, :mod:`.tasks`), ``bench memory`` (:mod:`.memory`), ``bench cluster`` (extrapolated and
emulated clusters, :mod:`.cluster`, :mod:`.links`, :mod:`.cluster_cli`).

May import: every package but :mod:`smallbig.cli`.
"""

# The chunk sizes `bench overhead` sweeps (here, light, for the command line's help).
CHUNKS = (1, 2, 5, 10, 20, 50)
