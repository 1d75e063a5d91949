"""``python -m bench [--size small|full] [--db sqlite,postgresql] [--scenario NAME]``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import harness
from bench.scenarios import SCENARIOS

DATABASES = ("sqlite", "postgresql")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="run only these")
    args = parser.parse_args(argv)

    databases = [d.strip() for d in args.db.split(",") if d.strip()]
    for unknown in sorted(set(databases) - set(DATABASES)):
        parser.error(f"--db: unknown database {unknown!r} (choose from {', '.join(sorted(DATABASES))})")
    if "postgresql" in databases and harness.pg_admin_url() is None:
        print("postgresql: skipped (set CRM_PERF_SYNC_BENCH_PG_URL or _TEST_PG_URL)", file=sys.stderr)
        databases.remove("postgresql")
    failed = False
    written = harness.results_file(args.size)
    print(harness.header())
    # Stores that several scenarios read are built once per run (see harness.shared_store).
    with tempfile.TemporaryDirectory(prefix="crm-perf-sync-bench-") as tmp, harness.sharing():
        for name in args.scenario or sorted(SCENARIOS):
            for result in SCENARIOS[name](args.size, databases, Path(tmp)):
                print(result.row(), flush=True)
                written = harness.append(result, args.size)
                # Small runs only prove the harness works; targets are judged at full size.
                failed |= args.size == "full" and result.passed is False
    print(f"results appended to {written}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
