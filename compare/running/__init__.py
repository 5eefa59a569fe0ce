"""A run: the plan of points (:mod:`.plan`) and the runner that measures them into records,
calibrates every backend and writes the run's outputs (:mod:`.runner`).

May import: :mod:`smallbig.results`, :mod:`smallbig.model`, :mod:`smallbig.present`,
:mod:`smallbig.backends`, :mod:`smallbig.workloads`.
"""
