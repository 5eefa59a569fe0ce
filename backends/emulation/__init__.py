"""The harness of emulated clusters, beside the engine adapters: network namespaces and shaped
links (:mod:`.netns`), multi-node Dask and Ray clusters in them (:mod:`.emulated`), CPU quotas
of a scale model (:mod:`.cpugroups`) and the monitors that check it kept its promise
(:mod:`.fidelity`).

May import: :mod:`smallbig.backends` (its lifeline and addresses), never the adapters at the
top level of a module: an adapter that needs the harness imports it where it uses it.
"""
