"""What a user reads: the answer block (:mod:`.answer`), the summary tables (:mod:`.report`),
report.html (:mod:`.report_html`) and the figures (:mod:`.plots`).

May import: :mod:`smallbig.results`, :mod:`smallbig.model`, :mod:`smallbig.backends` and
:mod:`smallbig.workloads` (a backend is named by its capabilities).
"""
