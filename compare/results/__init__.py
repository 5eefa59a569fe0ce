"""What a run measured and how it is kept: records and run.json on disk (:mod:`.records`),
how one time is measured (:mod:`.timing`), how a figure is written (:mod:`.fmt`).

May import: :mod:`smallbig.backends` and :mod:`smallbig.workloads` (a run's metadata names
the engines' versions and the CPU quota it ran under); every other package builds on this one.
"""
