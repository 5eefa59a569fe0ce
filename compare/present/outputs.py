"""A run's figures and report.html, drawn from what the run wrote to its folder: one function
for ``smallbig.run()``, ``smallbig run`` and ``smallbig report``."""

from __future__ import annotations

from pathlib import Path

from smallbig.model.calibrate import RUN_PROFILE, load_profile
from smallbig.model.fits import baseline_item_s
from smallbig.present import plots
from smallbig.present.report_html import write_report
from smallbig.results.records import add_outputs, load_records, read_metadata


def write_outputs(out_dir: str | Path) -> list[Path]:
    """Draw the scaling of every workload and the phase diagram, then write ``report.html``
    (which shows them), all into ``out_dir``; list them in its ``run.json`` as the run's own,
    so that the next run into the folder replaces them.

    Parameters
    ----------
    out_dir : path
        A run's folder: ``records.csv``, ``run.json`` and, when the run calibrated,
        ``calibration.json``.

    Returns
    -------
    list of Path
        The figures, then the report.
    """
    out = Path(out_dir)
    records = load_records(out)
    meta = read_metadata(out)
    drawn = [
        plots.scaling(records, workload, out / f"{workload}_scaling.png")
        for workload in sorted(records["workload"].unique())
    ]
    if (out / RUN_PROFILE).exists():  # measured winners on top of the predicted regions
        profile = load_profile(out / RUN_PROFILE)
        known = records[records["backend"].isin(profile["backends"])]
        winners = plots.measured_winners(known, baseline_item_s(records).to_dict())
        # One workload: its data per item gives the diagram its data axis and memory
        # boundary. Three of the four built-in ones release the GIL (the no-ops take too
        # little to matter), so the diagram is drawn for work that does.
        workloads = meta.get("workloads", {})
        data = (
            workloads[next(iter(workloads))].get("data_bytes_per_item", 0)
            if len(workloads) == 1
            else 0
        )
        drawn.append(
            plots.phase_diagram(
                profile,
                out / "phase_diagram.png",
                winners,
                True,
                cluster=plots.Cluster(),
                item_bytes=int(data or 0),
            )
        )
    add_outputs(out, drawn)
    report = write_report(out)
    add_outputs(out, [report])
    return [*drawn, report]
