"""Collecting benchmark figures and writing them as JSON and as docs/performance.md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Figure:
    """One measured scenario: samples in seconds, summarised as median and p99."""

    name: str
    unit: str
    samples: list[float]
    baseline: str | None = None
    notes: str = ""

    @property
    def median(self) -> float:
        """The median sample."""
        return statistics.median(self.samples)

    @property
    def p99(self) -> float:
        """The 99th percentile sample (nearest rank)."""
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


@dataclass
class Report:
    """Every figure of one `make bench` run, with the machine it ran on."""

    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        """Record a figure and print it as it arrives."""
        self.figures.append(figure)
        print(
            f"{figure.name}: median {figure.median * 1000:.2f} ms, "
            f"p99 {figure.p99 * 1000:.2f} ms over {len(figure.samples)}",
            flush=True,
        )
        return figure

    def _by_name(self) -> dict[str, Figure]:
        return {f.name: f for f in self.figures}

    def machine(self) -> dict[str, str]:
        """Where the figures were measured."""
        cpu = "unknown"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(),
            "cpu": cpu,
            "cores": str(len(os.sched_getaffinity(0))),
            "java": (java.stderr.splitlines() or ["?"])[0],
        }

    def write(self, json_path: Path, markdown_path: Path) -> None:
        """Write the JSON report and the Markdown table."""
        machine = self.machine()
        by_name = self._by_name()
        rows = []
        for figure in self.figures:
            base = by_name.get(figure.baseline or "")
            ratio = f"{figure.median / base.median:.2f}x" if base else "baseline"
            rows.append(
                {
                    **asdict(figure),
                    "median": figure.median,
                    "p99": figure.p99,
                    "ratio_to_baseline": ratio,
                }
            )
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"machine": machine, "figures": rows}, indent=2))
        lines = [
            "# Performance",
            "",
            "Written by `make bench`; every ratio compares medians measured in the same run on",
            "the same machine. Machines are shared and noisy: read ratios, not absolute times.",
            "",
            *(f"- {k}: {v}" for k, v in machine.items()),
            "",
            "| scenario | samples | median | p99 | vs baseline (median ratio) | notes |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows:
            versus = (
                f"{row['ratio_to_baseline']} of {row['baseline']}"
                if row["baseline"]
                else "baseline"
            )
            lines.append(
                f"| {row['name']} | {len(row['samples'])} | {row['median'] * 1000:.2f} ms | "
                f"{row['p99'] * 1000:.2f} ms | {versus} | {row['notes']} |"
            )
        markdown_path.write_text("\n".join(lines) + "\n")
