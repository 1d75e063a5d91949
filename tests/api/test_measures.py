"""Measures through the API: entered, changed and removed by an editor key, uploaded as CSV (all or
nothing, with errors naming row and field), listed as JSON and CSV, audited; and what an editor
key may not do."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from crm_perf_sync.apikeys import service as keys
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.measures import service as measures
from crm_perf_sync.measures.schemas import DeclaredValue
from tests.api.conftest import Served
from tests.api.test_read import all_pages

TEAM = "maven:team:Dustin Brinkmann"
EDITOR_NAME = "HR survey import"


@pytest.fixture(scope="module")
def editor(served: Served) -> dict[str, str]:
    with session_scope(served.session_factory) as session:
        _, key = keys.create(session, EDITOR_NAME, "editor")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def team_reps(served: Served) -> list[str]:
    reps = sorted(o["id"] for o in all_pages(served, "/api/v1/owners") if TEAM in o["teams"])
    assert len(reps) >= 3
    return reps


def entry_url(measure: str, scope: str, scope_id: str, grain: str, period: str) -> str:
    return (
        f"/api/v1/measures/entry?measure={measure}&scope={scope}&scope_id={scope_id}"
        f"&grain={grain}&period={period}"
    )


def csv_body(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode()


def upload(served: Served, headers: dict[str, str], body: bytes) -> Any:
    return served.client.post(
        "/api/v1/measures/upload", content=body, headers={**headers, "Content-Type": "text/csv"}
    )


def test_an_editor_enters_changes_and_removes_a_value_and_the_history_keeps_every_old_value(
    served: Served, editor: dict[str, str], team_reps: list[str]
) -> None:
    rep = team_reps[0]
    # Any date in the quarter names it; the entry is kept under the quarter's first day.
    url = entry_url("customer_satisfaction", "owner", rep, "quarter", "2017-05-17")
    created = served.client.put(url, json={"value": 4.35}, headers=editor)
    assert created.status_code == 201, created.text
    entry = created.json()
    assert (entry["period_key"], entry["period_start"], entry["period_end"]) == (
        "2017-04-01",
        "2017-04-01",
        "2017-07-01",
    )
    assert (entry["value"], entry["source"], entry["entered_by"]) == (4.35, "api", EDITOR_NAME)
    assert entry["measure_name"] == "Customer satisfaction (CSAT)"
    assert entry["scope_name"] == rep.removeprefix("maven:")
    assert served.get(url).json() == entry

    changed = served.client.put(url, json={"value": "3.9"}, headers=editor)
    assert (changed.status_code, changed.json()["value"]) == (200, 3.9)
    again = served.client.put(url, json={"value": 3.90}, headers=editor)  # the same value: no change
    assert again.status_code == 200
    assert served.client.delete(url, headers=editor).status_code == 204
    assert served.get(url).status_code == 404
    assert served.client.delete(url, headers=editor).status_code == 404

    query = f"measure=customer_satisfaction&owner={rep}&grain=quarter&period=2017-04"
    history = all_pages(served, f"/api/v1/measures/history?{query}")
    assert [(h["action"], h["old_value"], h["new_value"]) for h in history] == [
        ("delete", 3.9, None),
        ("update", 4.35, 3.9),
        ("create", None, 4.35),
    ]
    assert {(h["changed_by"], h["source"], h["period_key"]) for h in history} == {
        (EDITOR_NAME, "api", "2017-04-01")
    }


def test_an_editor_key_enters_measures_and_may_not_manage_anything_else(
    served: Served, editor: dict[str, str]
) -> None:
    url = entry_url("training_hours", "company", "company", "month", "2017-03")
    assert served.client.put(url, json={"value": 12.5}, headers=editor).status_code == 201
    assert served.client.get("/api/v1/kpis/won_deals/values?grain=year", headers=editor).status_code == 200
    assert served.client.get("/api/v1/webhooks/endpoints", headers=editor).status_code == 200

    target = {"kpi": "won_deals", "period": "2017", "value": 100}
    refused = [
        served.client.post("/api/v1/targets", json=target, headers=editor),
        served.client.post(
            "/api/v1/webhooks/endpoints", json={"url": "https://example.com/hook"}, headers=editor
        ),
        served.client.post("/api/v1/connections/maven/sync", json={}, headers=editor),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert "editor scope" in response.json()["detail"]
        assert "needs an admin key" in response.json()["detail"]

    # A read key may not enter measures; an admin key may.
    read = served.client.put(url, json={"value": 1}, headers=served.read)
    assert read.status_code == 403
    assert "needs an editor or admin key" in read.json()["detail"]
    assert served.client.put(url, json={"value": 13}, headers=served.admin).status_code == 200
    assert served.client.delete(url, headers=served.admin).status_code == 204


@pytest.mark.parametrize(
    ("url", "value", "errors"),
    [
        (
            entry_url("bars_rating", "owner", "{rep}", "quarter", "2017-04"),
            4.5,
            [("value", "4.5 is not on the scale's steps of 1 (1, 2, 3, ...)")],
        ),
        (
            entry_url("bars_rating", "owner", "{rep}", "quarter", "2017-04"),
            8,
            [("value", "8 is above the scale's maximum 7")],
        ),
        (
            entry_url("review_360", "team", TEAM, "month", "2017-04"),
            4,
            [
                ("scope", "review_360 is entered for owner, not team"),
                ("grain", "review_360 is entered by quarter, year, not month"),
            ],
        ),
        (
            entry_url("customer_satisfaction", "owner", "maven:Nobody", "quarter", "2017-04"),
            4,
            [("scope_id", "no owner 'maven:Nobody' (see /teams and /owners for their ids)")],
        ),
        (
            entry_url("customer_satisfaction", "company", "company", "quarter", "2017-04"),
            "4.1234567",
            [("value", "has more than 6 decimal places")],
        ),
        (
            entry_url("no_such_measure", "company", "company", "quarter", "2017-04"),
            1,
            [("measure_id", "unknown measure 'no_such_measure'")],
        ),
    ],
)
def test_a_value_off_its_definition_is_refused_naming_each_field(
    served: Served,
    editor: dict[str, str],
    team_reps: list[str],
    url: str,
    value: Any,
    errors: list[tuple[str, str]],
) -> None:
    response = served.client.put(url.format(rep=team_reps[0]), json={"value": value}, headers=editor)
    assert response.status_code == 422, response.text
    found = [(e["field"], e["message"]) for e in response.json()["errors"]]
    assert len(found) == len(errors)
    for (field, message), (want_field, want) in zip(found, errors, strict=True):
        assert field == want_field
        assert message.startswith(want)
    assert served.get(url.format(rep=team_reps[0])).status_code in (404, 422)


def test_an_upload_round_trips_through_the_csv_listing(
    served: Served, editor: dict[str, str], team_reps: list[str]
) -> None:
    a, b, c = team_reps[:3]
    rows = [
        ["measure_id", "scope", "scope_id", "grain", "period_key", "value"],
        ["review_360", "owner", a, "year", "2017", "4.25"],
        ["review_360", "owner", b, "year", "2017-01-01", "3"],
        ["bars_rating", "owner", c, "quarter", "2017-08", "6"],
        ["customer_satisfaction", "team", TEAM, "quarter", "2017-04-01", "4.1"],
        ["training_hours", "owner", a, "week", "2017-06-14", "7.5"],
        ["", "", "", "", "", ""],  # a blank line is read past
    ]
    done = upload(served, editor, csv_body(rows))
    assert done.status_code == 200, done.text
    assert done.json() == {"rows": 5, "created": 5, "updated": 0, "unchanged": 0}

    listed = all_pages(served, f"/api/v1/measures?team={TEAM}&source=csv&limit=2")
    got = {(r["measure_id"], r["scope_id"], r["grain"], r["period_key"]): r["value"] for r in listed}
    assert got == {
        ("review_360", a, "year", "2017-01-01"): 4.25,
        ("review_360", b, "year", "2017-01-01"): 3,
        ("bars_rating", c, "quarter", "2017-07-01"): 6,
        ("customer_satisfaction", TEAM, "quarter", "2017-04-01"): 4.1,
        ("training_hours", a, "week", "2017-06-12"): 7.5,  # the Monday of that week
    }
    assert {r["entered_by"] for r in listed} == {EDITOR_NAME}
    only_a = all_pages(served, f"/api/v1/measures?owner={a}&source=csv")
    assert {r["measure_id"] for r in only_a} == {"review_360", "training_hours"}
    in_q2 = "grain=quarter&from=2017-04-01&to=2017-06-30&source=csv"
    quarter = all_pages(served, f"/api/v1/measures?{in_q2}")
    assert [r["measure_id"] for r in quarter] == ["customer_satisfaction"]

    # The listing's CSV uploads as it is: nothing changes.
    downloaded = served.get(f"/api/v1/measures?team={TEAM}&source=csv&format=csv")
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"].startswith("text/csv")
    assert "4.25" in downloaded.text
    again = upload(served, editor, downloaded.content)
    assert again.json() == {"rows": 5, "created": 0, "updated": 0, "unchanged": 5}

    # Edited in a spreadsheet and uploaded again: one value changes, with its history.
    table = list(csv.DictReader(io.StringIO(downloaded.text)))
    for row in table:
        if row["measure_id"] == "bars_rating":
            row["value"] = "7"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    edited = upload(served, editor, out.getvalue().encode())
    assert edited.json() == {"rows": 5, "created": 0, "updated": 1, "unchanged": 4}
    latest = served.get(f"/api/v1/measures/history?measure=bars_rating&owner={c}&limit=1").json()["data"][0]
    assert (latest["action"], latest["old_value"], latest["new_value"], latest["source"]) == (
        "update",
        6,
        7,
        "csv",
    )


def test_an_upload_with_a_bad_row_writes_nothing_and_names_each_row_and_field(
    served: Served, editor: dict[str, str], team_reps: list[str]
) -> None:
    a, b = team_reps[:2]
    rows = [
        ["measure_id", "scope", "scope_id", "grain", "period_key", "value"],
        ["bars_rating", "owner", a, "month", "2016-05", "5"],  # row 2: good
        ["bars_rating", "owner", b, "month", "2016-05", "9"],  # row 3: off the scale
        ["bars_rating", "owner", "maven:Nobody", "month", "2016-05", "3"],  # row 4: no such rep
        ["bars_rating", "owner", a, "month", "2016-05-20", "4"],  # row 5: row 2 again
        ["bars_rating", "owner", b, "month", "May 2016", "4"],  # row 6: not a period
        ["bars_rating", "owner", b, "month", "2016-06", "4,5"],  # row 7: a decimal comma
        ["bars_rating", "region", b, "fortnight", "2016-06", "4"],  # row 8: two bad fields
        ["nps", "company", "company", "month", "2016-06", "40"],  # row 9: unknown measure
        ["bars_rating", "owner", b, "month", "2016-07", ""],  # row 10: no value
    ]
    response = upload(served, editor, csv_body(rows))
    assert response.status_code == 422
    problem = response.json()
    assert problem["detail"].startswith("9 problems in the upload, nothing was saved: row 3, value:")
    assert [(e["row"], e["field"]) for e in problem["errors"]] == [
        (3, "value"),
        (4, "scope_id"),
        (5, "period_key"),
        (6, "period_key"),
        (7, "value"),
        (8, "grain"),
        (8, "scope"),
        (9, "measure_id"),
        (10, "value"),
    ]
    by_row = {(e["row"], e["field"]): e["message"] for e in problem["errors"]}
    assert by_row[(3, "value")] == "9 is above the scale's maximum 7"
    assert by_row[(5, "period_key")] == "the same entry as row 2"
    assert by_row[(7, "value")] == "'4,5' is not a number (decimals with a dot: 4.5)"
    assert by_row[(10, "value")] == "empty"
    assert all(e["where"] == f"row {e['row']}, {e['field']}" for e in problem["errors"])
    assert all_pages(served, "/api/v1/measures?measure=bars_rating&grain=month") == []

    header = upload(served, editor, csv_body([["measure", "who", "grain", "period", "value"]]))
    assert header.status_code == 422
    assert [(e["row"], e["field"], e["message"]) for e in header.json()["errors"]] == [
        (1, "who", "unknown column (the columns: measure_id, scope, scope_id, grain, period_key, value)"),
        (1, "scope", "missing column"),
        (1, "scope_id", "missing column"),
    ]
    wrong_type = served.client.post("/api/v1/measures/upload", json={"rows": []}, headers=editor)
    assert wrong_type.status_code == 415


def test_the_listing_has_an_etag_that_changes_with_any_entry(served: Served, editor: dict[str, str]) -> None:
    first = served.get("/api/v1/measures?measure=training_hours")
    etag = first.headers["etag"]
    cached = served.get("/api/v1/measures?measure=training_hours", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    url = entry_url("training_hours", "company", "company", "year", "2016")
    assert served.client.put(url, json={"value": 100}, headers=editor).status_code == 201
    after = served.get("/api/v1/measures?measure=training_hours", headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert [r["value"] for r in after.json()["data"] if r["period_key"] == "2016-01-01"] == [100]


def test_declared_values_are_the_configurations_and_the_api_leaves_them_alone(
    served: Served, editor: dict[str, str], team_reps: list[str]
) -> None:
    rep = team_reps[1]
    catalog = measures.Catalog(served.config.measures, 1)
    declared = [
        DeclaredValue.model_validate(
            {"measure": "review_360", "scope": "owner", "scope_id": scope_id, "grain": "year", "period": 2015}
            | {"value": value}
        )
        for scope_id, value in ((rep, "4.5"), ("maven:Not Yet", "3"))
    ]
    at = datetime(2026, 12, 6, tzinfo=UTC)
    with session_scope(served.session_factory) as session:
        applied = measures.apply_declared(session, catalog, declared, at)
    assert (applied.created, applied.updated, applied.removed, applied.unchanged) == (1, 0, 0, 0)
    (waiting,) = applied.waiting
    assert waiting.startswith("review_360 owner 'maven:Not Yet': no owner 'maven:Not Yet'")
    url = entry_url("review_360", "owner", rep, "year", "2015")
    entry = served.get(url).json()
    assert (entry["value"], entry["source"], entry["entered_by"]) == (4.5, "config", "config")

    refused = served.client.put(url, json={"value": 2}, headers=editor)
    assert refused.status_code == 409
    assert "declared in the configuration" in refused.json()["detail"]
    assert served.client.delete(url, headers=editor).status_code == 409
    header = ["measure_id", "scope", "scope_id", "grain", "period_key", "value"]
    row = upload(served, editor, csv_body([header, ["review_360", "owner", rep, "year", "2015", "2"]]))
    assert [(e["row"], e["field"]) for e in row.json()["errors"]] == [(2, "value")]

    with session_scope(served.session_factory) as session:
        again = measures.apply_declared(session, catalog, declared, at)
        assert (again.created, again.updated, again.unchanged) == (0, 0, 1)
        changed = [declared[0].model_copy(update={"value": Decimal("4.75")})]
        assert measures.apply_declared(session, catalog, changed, at).updated == 1
        assert measures.apply_declared(session, catalog, [], at).removed == 1
    query = f"measure=review_360&owner={rep}&grain=year&period=2015"
    history = all_pages(served, f"/api/v1/measures/history?{query}")
    assert [(h["action"], h["old_value"], h["new_value"], h["changed_by"]) for h in history] == [
        ("delete", 4.75, None, "config"),
        ("update", 4.5, 4.75, "config"),
        ("create", None, 4.5, "config"),
    ]
    # Given back to the API once the configuration no longer declares it.
    assert served.client.put(url, json={"value": 2}, headers=editor).status_code == 201


def test_the_definitions_are_listed_with_their_scales_and_chinese_names(served: Served) -> None:
    rows = {d["id"]: d for d in all_pages(served, "/api/v1/measures/definitions")}
    assert set(rows) >= {"customer_satisfaction", "review_360", "bars_rating", "training_hours"}
    assert rows["bars_rating"]["scale"] == {"min": 1, "max": 7, "step": 1}
    assert rows["training_hours"]["scale"] == {"min": 0, "max": None, "step": None}
    aggregations = (rows["training_hours"]["aggregation"], rows["customer_satisfaction"]["aggregation"])
    assert aggregations == ("sum", "mean")
    assert rows["review_360"]["scopes"] == ["owner"]
    assert rows["customer_satisfaction"]["name_zh"] == "客户满意度（CSAT）"
