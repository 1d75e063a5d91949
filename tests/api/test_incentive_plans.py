"""Plans set through the API by an admin: checked as the configuration's are, computed by the next
refresh with them (to the cent what the independent reference says), changed and removed without
touching what a closed period paid."""

from __future__ import annotations

import json
from copy import deepcopy
from decimal import Decimal
from typing import Any

import pytest
import yaml

from crm_perf_sync.api.incentive_schemas import PlanOut
from crm_perf_sync.incentives import repository as incentives_repo
from crm_perf_sync.incentives.service import IncentiveService
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.kit.timeutil import utc_now
from crm_perf_sync.models import IncentiveLine
from tests.api.test_incentives import Api, api  # noqa: F401  (its fixture, shared)
from tests.conftest import REPO_ROOT
from tests.incentives.conftest import (  # noqa: F401  (the Maven store with its plans, per backend)
    Store,
    incentives_postgresql,
    incentives_sqlite,
    store,
)
from tests.incentives.test_maven_plans import east_2017, read_maven

API = "/api/v1/incentives"


def example_plan(plan_id: str) -> dict[str, Any]:
    """A plan of the shipped Maven example, as its YAML writes it (dates as text, as JSON has them)."""
    text = (REPO_ROOT / "config" / "examples" / "maven.yaml").read_text(encoding="utf-8")
    plans = yaml.safe_load(text)["incentives"]["plans"]
    found = next(p for p in plans if p["id"] == plan_id)
    return dict(json.loads(json.dumps(found, default=str)))


class Admin(Api):
    """The incentives API with an admin's and a reader's key, and the store behind it."""

    def keyed(self, plan_id: str) -> dict[tuple[str, str, str, str, str], IncentiveLine]:
        """A plan's lines by (period, owner, component, kind, period corrected)."""
        return {
            (r.period_key, r.owner_id, r.component_id, r.kind, r.for_period_key): r
            for r in self.lines(plan_id=plan_id).values()
        }

    def stale(self) -> str | None:
        """What the worker would refresh for (the configuration's plans with the stored ones)."""
        job = self.store.job()
        with session_scope(self.store.session_factory) as session:
            return job.incentives.in_store(session).stale_reason(session, utc_now())


@pytest.fixture(scope="module")
def admin(api: Api) -> Admin:  # noqa: F811  (the fixture imported above)
    return Admin(api.client, api.store, api.read, api.admin)


def test_a_plan_set_through_the_api_pays_what_the_reference_says(admin: Admin) -> None:
    definition = example_plan("east-2017") | {"id": "east-api", "name": "East bonus plan (API)"}
    assert admin.client.post(f"{API}/plans", json=definition, headers=admin.read).status_code == 403
    assert admin.stale() is None

    made = admin.client.post(f"{API}/plans", json=definition, headers=admin.admin)
    assert made.status_code == 201, made.text
    assert made.headers["Location"] == f"{API}/plans/east-api"
    body = PlanOut.model_validate(made.json())
    assert (body.source, body.name, body.period) == ("api", "East bonus plan (API)", "quarter")
    assert [c.id for c in body.components] == ["commission", "balanced"]
    assert [p.lines for p in body.periods] == [0, 0, 0, 0]  # computed by the next refresh
    assert admin.stale() == "incentive plan east-api changed"
    listed = admin.client.get(f"{API}/plans", headers=admin.read).json()["data"]
    assert {(p["id"], p["source"]) for p in listed} == {
        ("agents-2017", "configuration"),
        ("east-2017", "configuration"),
        ("east-api", "api"),
    }

    outcome = admin.store.job().refresh()
    assert set(outcome.incentives) == {"east-api"}  # the configured plans did not change
    lines_written = outcome.incentives["east-api"].lines
    assert outcome.summary().startswith(
        f"KPIs already up to date, {lines_written} payout lines of 1 plan in "
    )
    assert admin.stale() is None
    expected = east_2017(read_maven())
    lines = admin.keyed("east-api")
    paid = {(k[1].removeprefix("maven:"), k[0], k[2]): Decimal(str(v.amount)) for k, v in lines.items()}
    assert paid == expected
    assert sum(expected.values()) > 0
    shown = admin.client.get(f"{API}/plans/east-api", headers=admin.read).json()
    assert sum(p["lines"] for p in shown["periods"]) == len(expected)


def problem(
    admin: Admin, definition: dict[str, Any], status: int, method: str = "POST", url: str = ""
) -> str:
    answer = admin.client.request(method, url or f"{API}/plans", json=definition, headers=admin.admin)
    assert answer.status_code == status, answer.text
    return str(answer.json()["detail"])


def test_a_plan_is_checked_as_the_configuration_checks_it(admin: Admin) -> None:
    good = example_plan("agents-2017") | {"id": "checked"}
    gap = deepcopy(good)
    gap["components"][0]["tiers"] = [{"from": 0, "to": 1, "rate": 0.05}, {"from": 1.2, "rate": 0.08}]
    assert "tiers" in problem(admin, gap, 422)
    wrong_kpi = deepcopy(good)
    wrong_kpi["components"][0]["base"] = {"kpi": "win_rate"}
    said = problem(admin, wrong_kpi, 422)
    assert "components[0].base.kpi: win_rate is a ratio KPI; a commission's base is a sum KPI" in said
    no_card = deepcopy(good)
    no_card["components"].append({"id": "bonus", "type": "score_bonus", "scorecard": "nope", "amount": 100})
    assert "components[2].scorecard: unknown scorecard 'nope'" in problem(admin, no_card, 422)
    no_team = good | {"participants": [{"team": "maven:region:North"}]}
    assert "participants[0].team: no team 'maven:region:North'" in problem(admin, no_team, 422)
    negative = deepcopy(good)
    negative["components"][1]["amount"] = -5
    assert "amount" in problem(admin, negative, 422)
    # An id is the configuration file's or the API's, never both.
    assert "configuration file" in problem(admin, good | {"id": "agents-2017"}, 409)
    assert "configuration file" in problem(
        admin, good | {"id": "agents-2017"}, 409, "PUT", f"{API}/plans/agents-2017"
    )
    assert admin.client.delete(f"{API}/plans/agents-2017", headers=admin.admin).status_code == 409
    assert admin.client.delete(f"{API}/plans/never-set", headers=admin.admin).status_code == 404
    with session_scope(admin.store.session_factory) as session:
        assert "checked" not in {row.plan_id for row in incentives_repo.plan_definitions(session)}


def test_a_changed_plan_pays_by_its_new_terms_and_a_removed_one_keeps_what_was_paid(admin: Admin) -> None:
    definition = example_plan("agents-2017") | {"id": "agents-api"}
    assert admin.client.post(f"{API}/plans", json=definition, headers=admin.admin).status_code == 201
    admin.store.job().refresh()
    first = admin.keyed("agents-api")
    configured = admin.keyed("agents-2017")
    assert {k: v.amount for k, v in first.items()} == {k: v.amount for k, v in configured.items()}
    assert first

    # Without the SPIFF and with a lower cap: the SPIFF lines go, the commissions are capped lower.
    changed = deepcopy(definition)
    changed["components"] = [changed["components"][0] | {"cap": {"on_target_multiple": 1.2}}]
    assert "keeps its id" in problem(admin, changed | {"id": "other"}, 422, "PUT", f"{API}/plans/agents-api")
    answer = admin.client.put(f"{API}/plans/agents-api", json=changed, headers=admin.admin)
    assert answer.status_code == 200, answer.text
    assert [c["id"] for c in answer.json()["components"]] == ["commission"]
    assert admin.stale() == "incentive plan agents-api changed"
    admin.store.job().refresh()
    second = admin.keyed("agents-api")
    assert {k[2] for k in second} == {"commission"}
    for key, line in second.items():
        was = first[key]
        on_target = Decimal(str(line.quota)) * Decimal("0.05")
        assert Decimal(str(line.amount)) == min(
            Decimal(str(was.detail.get("uncapped", was.amount))),
            (on_target * Decimal("1.2")).quantize(Decimal("0.01")),
        )
    assert any(line.capped and not first[key].capped for key, line in second.items())

    # The first quarter closed, then the plan removed: its open lines go, the paid ones stay.
    closed = admin.client.post(f"{API}/plans/agents-api/periods/2017-01-01/close", headers=admin.admin)
    assert closed.status_code == 201, closed.text
    listing = f"{API}/payouts?plan=agents-api&limit=1000"
    etag = admin.client.get(listing, headers=admin.read).headers["ETag"]
    assert admin.client.delete(f"{API}/plans/agents-api", headers=admin.admin).status_code == 204
    assert admin.client.get(f"{API}/plans/agents-api", headers=admin.read).status_code == 404
    assert admin.stale() == "incentive plan agents-api was removed"
    admin.store.job().refresh()
    assert admin.stale() is None
    left = admin.keyed("agents-api")
    assert left.keys() == {k for k in second if k[0] == "2017-01-01"}
    # A client holding the listing from before the removal is told it changed.
    admin.client.app.state.context.versions.forget(("incentives",))  # type: ignore[attr-defined]  # (read once a second)
    fresh = admin.client.get(listing, headers={**admin.read, "If-None-Match": etag})
    assert fresh.status_code == 200
    assert len(fresh.json()["data"]) == len(left)
    assert all(line.frozen and line.amount == second[k].amount for k, line in left.items())


def test_a_stored_plan_the_configuration_no_longer_fits_is_left_as_it_was(admin: Admin) -> None:
    definition = example_plan("east-2017") | {"id": "east-later"}
    assert admin.client.post(f"{API}/plans", json=definition, headers=admin.admin).status_code == 201
    admin.store.job().refresh()
    before = admin.keyed("east-later")
    assert before
    # The scorecard it pays on is gone from the configuration (written here as if it had been).
    with session_scope(admin.store.session_factory) as session:
        row = incentives_repo.plan_definition(session, "east-later")
        assert row is not None
        broken = deepcopy(row.definition)
        broken["components"][1]["scorecard"] = "retired"
        incentives_repo.update_plan_definition(session, row, broken, "an older release", utc_now())
    job = admin.store.job()
    with session_scope(admin.store.session_factory) as session:
        service: IncentiveService = job.incentives.in_store(session)
        assert "east-later" not in service.plans
        assert "unknown scorecard 'retired'" in service.invalid["east-later"]
    said = admin.client.get(f"{API}/plans/east-later", headers=admin.read)
    assert said.status_code == 404
    assert "cannot be computed" in said.json()["detail"]
    assert "retired" in said.json()["detail"]
    job.refresh(full=True)
    after = admin.keyed("east-later")
    assert {k: v.amount for k, v in after.items()} == {k: v.amount for k, v in before.items()}
    # Fixed through the API, it is computed again.
    assert (
        admin.client.put(f"{API}/plans/east-later", json=definition, headers=admin.admin).status_code == 200
    )


def test_a_plan_closed_before_any_refresh_loses_its_open_lines_when_removed(admin: Admin) -> None:
    definition = example_plan("agents-2017") | {"id": "closed-early"}
    assert admin.client.post(f"{API}/plans", json=definition, headers=admin.admin).status_code == 201
    # Closed at once: the close computes the plan's lines (no refresh ran since it was set).
    closed = admin.client.post(f"{API}/plans/closed-early/periods/2017-01-01/close", headers=admin.admin)
    assert closed.status_code == 201, closed.text
    written = admin.keyed("closed-early")
    assert {k[0] for k in written} == {"2017-01-01", "2017-04-01", "2017-07-01", "2017-10-01"}
    assert admin.client.delete(f"{API}/plans/closed-early", headers=admin.admin).status_code == 204
    admin.store.job().refresh()
    left = admin.keyed("closed-early")
    assert left.keys() == {k for k in written if k[0] == "2017-01-01"}
    assert all(line.frozen for line in left.values())
