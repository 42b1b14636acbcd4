"""`make bench`: start a real broker, run every benchmark, write the report."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from gitops_localstack.kafka import KafkaBroker
from tests.bench import bench_bus, bench_drift, bench_release
from tests.bench.report import REPO, Report


def main() -> None:
    """Run the benchmarks against a fresh local broker."""
    # aiokafka logs transient coordinator lookups while a fresh broker settles; figures only.
    logging.basicConfig(level=logging.ERROR)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="gitops-bench-") as tmp:
        broker = KafkaBroker.start(Path(tmp) / "kafka", REPO / ".cache", REPO)
        try:
            asyncio.run(bench_bus.run(report, broker.bootstrap_servers))
            asyncio.run(
                bench_release.run(report, broker.bootstrap_servers, Path(tmp), REPO / ".cache")
            )
            asyncio.run(
                bench_drift.run(report, broker.bootstrap_servers, Path(tmp), REPO / ".cache")
            )
        finally:
            broker.stop()
    report.write(REPO / ".local" / "bench" / "report.json", REPO / "docs" / "performance.md")
    print(f"report: {REPO / '.local' / 'bench' / 'report.json'} and docs/performance.md")


if __name__ == "__main__":
    main()
