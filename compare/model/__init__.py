"""The cost model: each backend's calibration (:mod:`.calibrate`), what one item of a task
costs (:mod:`.taskprofile`, :mod:`.coldstart`), predicted time (:mod:`.costmodel`) and memory
(:mod:`.footprint`), fits and crossovers over records (:mod:`.fits`), the small-big band of
a cluster (:mod:`.band`), and the model checked against what was measured
(:mod:`.validation`).

May import: :mod:`smallbig.results`, :mod:`smallbig.backends`, :mod:`smallbig.workloads`.
:mod:`.coldstart_worker` runs in a fresh interpreter and imports only what a worker has.
"""
