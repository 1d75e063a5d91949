"""``sync-salesforce-latency``: a full sync from an org that answers at Salesforce's pace, against
the bare fetch of the same pages from the same org.

Against an emulated org on the same two cores the sync competes with the org for the CPU, and
``sync-salesforce`` measures how much work the sync does per record. A real org is far slower than
that work: a REST query page of 2,000 rows takes about 150 ms to arrive and a Bulk API 2.0 CSV page
about 2 s. What a user waits for is then the CRM, and what matters is that the sync hides its own
work (parsing, mapping, storing) behind that waiting. Here the emulated org (in its own process)
answers every request :data:`REQUEST_LATENCY` after it arrived and every Bulk result page
:data:`BULK_PAGE_LATENCY` after, its own work included (a response time, as users measure it).

Per path (REST pages; Bulk API 2.0 CSV pages), each in a fresh child process:

- the floor: the same pages fetched and parsed alone, storing nothing — REST: simple-salesforce's
  ``query_all_iter`` over the connector's query; Bulk: the same job created, polled at the
  connector's interval, and its CSV pages read by locator and parsed;
- the sync: the ``salesforce`` connector through the real :class:`SyncEngine` into a fresh store,
  from login to the last commit (its extra requests — describe, limits, ``COUNT()`` — take as long).

``ratio`` = floor seconds ÷ sync seconds; target ≥ :data:`TARGET_RATIO`, i.e. the sync takes at most
1/0.95 of the bare fetch time.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from bench.harness import Result, database, in_child
from bench.sync_salesforce import connection_settings, emulated_org, rest_floor, run_sync

SIZES = {"small": 2_500, "full": 1_000_000}
#: Response time of every request, in seconds (a REST query page: about 150 ms).
REQUEST_LATENCY = 0.150
#: Response time of a Bulk API 2.0 result page (about 2 s for tens of thousands of rows).
BULK_PAGE_LATENCY = 2.0
#: Rows per Bulk CSV page: the connector's default at full size, the smallest allowed at small.
BULK_PAGE_SIZE = {"small": 1_000, "full": 50_000}
TARGET_RATIO = 0.95


#: Small runs only prove the scenario works: the org answers ten times faster, and the Bulk job is
#: polled ten times as often (by the floor and the connector alike).
PACE = {"small": 0.1, "full": 1.0}


def latency(pace: float = 1.0) -> dict[str, float]:
    """The response time of every route the emulated org answers, ``pace`` times the real one."""
    from tests.connectors.salesforce.emulator import Route

    return {
        **dict.fromkeys(get_args(Route), REQUEST_LATENCY * pace),
        "bulk_results": BULK_PAGE_LATENCY * pace,
    }


def bulk_floor(url: str, ca_path: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The connector's Bulk job created, polled and its CSV pages read and parsed, nothing stored."""
    import requests
    from simple_salesforce.api import Salesforce

    from crm_perf_sync_salesforce import soql
    from crm_perf_sync_salesforce.auth import login
    from crm_perf_sync_salesforce.connector import OBJECTS
    from crm_perf_sync_salesforce.settings import SalesforceSettings

    config = SalesforceSettings.model_validate(connection_settings(url, ca_path, **overrides))
    page_size = config.bulk_page_size
    http = requests.Session()
    http.trust_env = False
    http.verify = ca_path
    session = login(config, http)
    sf = Salesforce(
        session_id=session.token, instance=session.instance, version=config.api_version, session=http
    )
    obj = OBJECTS["opportunities"]
    fields = [name for name in obj.fields if name != "CurrencyIsoCode"]
    upper = datetime.now(UTC).replace(microsecond=0) - config.skew
    text = soql.select(obj.sobject, fields, [soql.at_most("SystemModstamp", upper)])
    payload = {
        "operation": "queryAll",
        "query": text,
        "contentType": "CSV",
        "columnDelimiter": "COMMA",
        "lineEnding": "LF",
    }
    started = time.perf_counter()
    job = str((sf.restful("jobs/query", method="POST", json=payload) or {})["id"])
    while (sf.restful(f"jobs/query/{job}") or {}).get("state") != "JobComplete":
        time.sleep(config.bulk_poll_interval)
    records, locator = 0, None
    while True:
        params: dict[str, Any] = {"maxRecords": page_size}
        if locator:
            params["locator"] = locator
        response = http.get(
            f"{sf.base_url}jobs/query/{job}/results",
            headers={**sf.headers, "Accept": "text/csv"},
            params=params,
        )
        response.raise_for_status()
        records += len(list(csv.DictReader(io.StringIO(response.content.decode("utf-8")))))
        locator = response.headers.get("Sforce-Locator")
        if locator in (None, "", "null"):
            break
    seconds = time.perf_counter() - started
    http.close()
    return {"records": records, "seconds": seconds}


def sync_salesforce_latency(size: str, databases: list[str], workdir: Path) -> Iterator[Result]:
    """Per path, the floor then a sync into each database, against one org answering at its pace."""
    count = SIZES[size]
    from crm_perf_sync_salesforce.settings import SalesforceSettings

    defaults = SalesforceSettings.model_fields
    page_size = BULK_PAGE_SIZE[size]
    paths: dict[str, dict[str, Any]] = {
        "rest": {"bulk_threshold": None},
        "bulk": {
            "bulk_threshold": 1,
            "bulk_page_size": page_size,
            "bulk_poll_interval": defaults["bulk_poll_interval"].default * PACE[size],
        },
    }
    with emulated_org(workdir, count, latency(PACE[size])) as (url, ca_path, _pid):
        for path, overrides in paths.items():
            if path == "rest":
                bare = in_child(rest_floor, url, ca_path)
            else:
                bare = in_child(bulk_floor, url, ca_path, overrides)
            for kind in databases:
                with database(kind, workdir) as db_url:
                    run = in_child(run_sync, db_url, url, ca_path, True, overrides)
                ratio = bare["seconds"] / run["seconds"]
                yield Result(
                    scenario="sync-salesforce-latency",
                    size=f"{count // 1000}k",
                    database=f"{kind}/{path}",
                    records=run["records"],
                    seconds=run["seconds"],
                    rate=run["records"] / run["seconds"],
                    peak_rss_mb=run["peak_rss_mb"],
                    floor=f"bare fetch + parse of the same {'REST' if path == 'rest' else 'Bulk CSV'} pages",
                    floor_rate=bare["records"] / bare["seconds"],
                    ratio=ratio,
                    target=f"fetch/sync time >= {TARGET_RATIO:.2f}",
                    passed=ratio >= TARGET_RATIO and run["records"] == count == bare["records"],
                    notes={
                        "floor_seconds": round(bare["seconds"], 2),
                        "request_latency_s": REQUEST_LATENCY * PACE[size],
                        "bulk_page_latency_s": BULK_PAGE_LATENCY * PACE[size],
                        "page_rows": page_size if path == "bulk" else defaults["page_size"].default,
                    },
                )
