"""mkdocs hook: publish the benchmark plots of ``benchmarks/results/`` under ``assets/benchmarks/``.

The plots are written by the benchmark scripts; copying them into ``docs/`` would leave stale
copies behind. A page links them as ``assets/benchmarks/NAME.png``; a plot that does not exist
is a broken link, which ``mkdocs build --strict`` reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def on_files(files: Files, config: Any) -> Files:
    """Add every PNG of ``benchmarks/results`` to the site."""
    for plot in sorted(RESULTS.glob("*.png")):
        files.append(
            File.generated(config, f"assets/benchmarks/{plot.name}", abs_src_path=str(plot))
        )
    return files
