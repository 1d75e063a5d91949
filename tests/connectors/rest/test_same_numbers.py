"""The same data through a CRM's API and through its CSV export gives the same KPI values.

Each dataset of ../shared/data is served by an emulator of a CRM's API (the Maven deals as a
简道云 form and as a 伙伴云 table, both with Chinese labels; the Zoho sample through Zoho CRM's API
and as a Pipedrive company), synced with the shipped spec through the command line, refreshed, and
every ``kpi_value`` row compared with the rows of the same data imported from its CSV files by
``config/examples``. Rows are keyed by what they mean, not by ids the two sides assign differently
(an owner by name, a team by name).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import MetaData, Table, select

from crm_perf_sync.kit.db import create_db_engine
from tests.cli_inprocess import invoke
from tests.conftest import DATA_DIR, REPO_ROOT, built_once
from tests.connectors.rest.emulators.huoban import HuobanEmulator
from tests.connectors.rest.emulators.huoban_data import maven_table
from tests.connectors.rest.emulators.jiandaoyun import JiandaoyunEmulator
from tests.connectors.rest.emulators.jiandaoyun_data import maven_form
from tests.connectors.rest.emulators.pipedrive import PipedriveEmulator
from tests.connectors.rest.emulators.pipedrive_data import zoho_company
from tests.connectors.rest.emulators.zoho import ZohoEmulator
from tests.connectors.rest.emulators.zoho_data import zoho_org
from tests.connectors.rest.support import (
    huoban_settings,
    jiandaoyun_settings,
    pipedrive_settings,
    zoho_settings,
)

pytestmark = pytest.mark.slow

Key = tuple[str, str, str, str, str, str]  # kpi, grain, period, scope, scope name, currency


@dataclass(frozen=True)
class Row:
    value: float | None
    numerator: float
    denominator: float | None
    sample_count: int


def run(*args: str, db_url: str, config: Path) -> None:
    result = invoke(
        *args,
        "--config",
        str(config),
        env={
            "COLUMNS": "250",
            "CRM_DATA_DIR": str(DATA_DIR),
            "CRM_PERF_SYNC_DATABASE_URL": db_url,
            "CRM_PERF_SYNC_CONFIG": str(config),
        },
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    if args[0] == "sync":
        assert "skipped 0" in result.stdout, result.stdout


def store(tmp: Path, template: Path, config: Path) -> str:
    """A fresh store with ``config``'s connections synced and its KPIs refreshed."""
    path = tmp / f"{config.stem}.db"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    run("sync", db_url=url, config=config)
    run("refresh", db_url=url, config=config)
    return url


def kpi_rows(db_url: str, stages: Mapping[str, str] | None = None) -> dict[Key, Row]:
    """Every ``kpi_value`` row (breakdowns too), owners and teams named by their names, the
    stages of funnel breakdowns translated by ``stages``."""
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            meta = MetaData()
            values = Table("kpi_value", meta, autoload_with=conn)
            owners = Table("owner", meta, autoload_with=conn)
            teams = Table("team", meta, autoload_with=conn)
            owner_names = {
                f"{r.connection_id}:{r.external_id}": r.name for r in conn.execute(select(owners)).all()
            }
            team_names = {f"{r.namespace}:{r.external_id}": r.name for r in conn.execute(select(teams)).all()}
            rows = conn.execute(select(values)).mappings().all()
    finally:
        engine.dispose()
    out: dict[Key, Row] = {}
    for row in rows:
        scope_id = row["scope_id"]
        if row["scope"] == "owner":
            scope_id = owner_names.get(scope_id) or scope_id
        elif row["scope"] == "team":
            scope_id = team_names.get(scope_id) or scope_id
        kpi = row["kpi_id"]
        if row["dimension"]:
            value = row["dimension_value"]
            if row["dimension"] == "stage" and stages is not None:
                value = stages.get(value, value)
            kpi = f"{kpi}/{row['dimension']}={value}"
        key: Key = (kpi, row["grain"], row["period_key"], row["scope"], scope_id, row["currency"])
        assert key not in out, f"two rows mean {key}"
        out[key] = Row(row["value"], row["numerator"], row["denominator"], row["sample_count"])
    return out


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def compare(
    api: dict[Key, Row], csv: dict[Key, Row], *, kpis: set[str] | None = None, scopes: tuple[str, ...]
) -> int:
    """Every row of the chosen KPIs and scopes equal on both sides; how many were compared."""

    def chosen(rows: dict[Key, Row]) -> dict[Key, Row]:
        return {
            k: v for k, v in rows.items() if k[3] in scopes and (kpis is None or k[0].split("/")[0] in kpis)
        }

    left, right = chosen(api), chosen(csv)
    missing = sorted(set(right) - set(left))[:5]
    extra = sorted(set(left) - set(right))[:5]
    assert not missing, f"rows only from the CSV: {missing}"
    assert not extra, f"rows only from the API: {extra}"
    wrong = [
        (key, left[key], right[key])
        for key in right
        if not (
            same(left[key].value, right[key].value)
            and same(left[key].numerator, right[key].numerator)
            and same(left[key].denominator, right[key].denominator)
            and left[key].sample_count == right[key].sample_count
        )
    ]
    assert not wrong, f"{len(wrong)} of {len(right)} rows differ, e.g. {wrong[:3]}"
    return len(right)


def write_config(tmp: Path, name: str, connection: Mapping[str, Any], **sections: Any) -> Path:
    config = {"business": {"timezone": "UTC"}, "connections": [connection], **sections}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def example(name: str) -> Path:
    return REPO_ROOT / "config" / "examples" / f"{name}.yaml"


def csv_store(tmp_path_factory: pytest.TempPathFactory, template: Path, name: str, text: str) -> str:
    """The store of an example imported from its CSV files, built once in the session (the
    workers share it: they only read it)."""

    def build(directory: Path) -> dict[str, str]:
        config = directory / f"{name}.yaml"
        config.write_text(text, encoding="utf-8")
        return {"url": store(directory, template, config)}

    return built_once(tmp_path_factory, f"rest-csv-{name}", build)["url"]


@pytest.fixture(scope="module")
def maven_csv(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict[Key, Row]:
    # The example breaks KPIs down by product and by the account's sector; the forms hold no sector.
    # Its targets, scorecard and incentive plans (which the forms' configuration does not have) go.
    text = example("maven").read_text(encoding="utf-8")
    text = text[: text.index("\n  # A yearly revenue target")] + "\n"
    text = text.replace("dimensions: [product, custom.account_sector]", "dimensions: [product]")
    return kpi_rows(csv_store(tmp_path_factory, sqlite_template, "maven", text))


@pytest.fixture(scope="module")
def zoho_csv(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> dict[Key, Row]:
    text = example("zoho").read_text(encoding="utf-8")
    return kpi_rows(csv_store(tmp_path_factory, sqlite_template, "zoho", text))


#: The 商机 forms' stages, as the Maven export names them.
MAVEN_STAGES = {"初步接洽": "Prospecting", "需求沟通": "Engaging", "赢单": "Won", "输单": "Lost"}
#: The forms' own stage table (a user gives theirs when it is not the spec's typical one).
MAVEN_STAGE_TABLE = {
    "pipeline": "maven",
    "table": [
        {"stage": "初步接洽"},
        {"stage": "需求沟通"},
        {"stage": "赢单", "is_won": True, "probability": 1.0},
        {"stage": "输单", "is_closed": True, "probability": 0.0},
    ],
}
#: The product the Maven pipeline spells "GTXPro" is "GTX Pro" (the example config maps it too).
PRODUCT = {"map": {"GTXPro": "GTX Pro"}}


def test_the_maven_deals_as_a_jiandaoyun_form_give_the_csv_numbers(
    tmp_path: Path, sqlite_template: Path, maven_csv: dict[Key, Row]
) -> None:
    with JiandaoyunEmulator(maven_form()) as emulator:
        streams = {
            "opportunities": {
                "fields": {"product": {"path": "{{ lookups.widgets['产品'] }}", **PRODUCT}},
                "stages": MAVEN_STAGE_TABLE,
            }
        }
        settings = jiandaoyun_settings(emulator, requests_per_second=0, streams=streams)
        settings["inputs"]["currency"] = "USD"
        connection = {"id": "jdy", "kind": "rest", "settings": settings}
        config = write_config(tmp_path, "jdy", connection, kpis={"dimensions": ["product"]})
        api = kpi_rows(store(tmp_path, sqlite_template, config), MAVEN_STAGES)
    compared = compare(api, maven_csv, scopes=("company", "team", "owner"))
    assert compared > 5000


def test_the_maven_deals_as_a_huoban_table_give_the_csv_numbers(
    tmp_path: Path, sqlite_template: Path, maven_csv: dict[Key, Row]
) -> None:
    with HuobanEmulator(maven_table()) as emulator:
        streams = {
            "opportunities": {
                "fields": {"product": {"path": "fields.\"{{ lookups.fields['产品'] }}\"", **PRODUCT}},
                "stages": MAVEN_STAGE_TABLE,
            }
        }
        # The table's dates are days of the business's calendar, which is UTC here.
        settings = huoban_settings(emulator, requests_per_second=0, timezone="UTC", streams=streams)
        settings["inputs"]["currency"] = "USD"
        connection = {"id": "hb", "kind": "rest", "settings": settings}
        config = write_config(tmp_path, "hb", connection, kpis={"dimensions": ["product"]})
        api = kpi_rows(store(tmp_path, sqlite_template, config), MAVEN_STAGES)
    # 伙伴云's owners are the users named on deals: the five agents with no deal are not among them.
    compared = compare(api, maven_csv, scopes=("company",))
    owners = {k: v for k, v in maven_csv.items() if k[3] == "owner" and v.sample_count}
    assert compare(api, owners, scopes=("owner",)) == len(owners)
    assert compared > 500


def test_the_zoho_sample_through_zoho_crm_gives_the_csv_numbers(
    tmp_path: Path, sqlite_template: Path, zoho_csv: dict[Key, Row]
) -> None:
    with ZohoEmulator(zoho_org()) as emulator:
        connection = {"id": "zoho-api", "kind": "rest", "settings": zoho_settings(emulator)}
        config = write_config(tmp_path, "zoho-api", connection)
        api = kpi_rows(store(tmp_path, sqlite_template, config))
    # Zoho's stage table lists its standard stages too: the funnels have more (empty) steps. And
    # Closing_Date is a date in Zoho CRM where the export writes a time ("16 Apr, 2021 00:03:00"):
    # cycle lengths (and the sales velocity they divide) differ by those minutes.
    timed = ("stage_funnel", "sales_cycle_days", "sales_velocity")
    kpis = {k[0] for k in zoho_csv if not k[0].startswith(timed)}
    compared = compare(api, zoho_csv, kpis=kpis, scopes=("company", "owner"))
    assert compared > 1000


def test_the_zoho_sample_as_a_pipedrive_company_gives_the_csv_deal_numbers(
    tmp_path: Path, sqlite_template: Path, zoho_csv: dict[Key, Row]
) -> None:
    with PipedriveEmulator(zoho_company()) as emulator:
        emulator.rate_limit = None
        emulator.daily_quota = None
        connection = {"id": "pd", "kind": "rest", "settings": pipedrive_settings(emulator)}
        config = write_config(tmp_path, "pd", connection)
        api = kpi_rows(store(tmp_path, sqlite_template, config))
    # Pipedrive deletes a lead when it is converted, and keeps won and lost deals in the stage they
    # closed from: lead KPIs and the stage funnel cannot match an export that kept both.
    deal_kpis = {k[0] for k in zoho_csv if not k[0].startswith(("lead", "stage_funnel"))}
    compared = compare(api, zoho_csv, kpis=deal_kpis, scopes=("company", "owner"))
    assert compared > 1000
