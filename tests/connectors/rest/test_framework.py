"""The rest connector's spec language against an invented CRM (tests/connectors/rest/toy.py) over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from crm_perf_sync.connector_sdk import (
    ActivityRecord,
    BadRecord,
    Checkpoint,
    ConnectorConfigError,
    FatalError,
    OpportunityRecord,
    OwnerRecord,
    PipelineStageRecord,
    QuotaExhaustedError,
    RetriableError,
    SkippableRecordError,
    SnapshotComplete,
    Tombstone,
)
from crm_perf_sync_rest.client import _loads
from crm_perf_sync_rest.connector import RestSettings
from crm_perf_sync_rest.mapping import RecordMapper, _text, exact
from crm_perf_sync_rest.spec import Stream
from crm_perf_sync_rest.templates import Table
from tests.connectors.rest.emulators.base import SimClock
from tests.connectors.rest.support import (
    TOY_SPEC,
    connector,
    last_state,
    of_type,
    read,
    spec_variant,
)
from tests.connectors.rest.toy import API_KEY, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, ToyCrm

STAGE_NAMES = {"s1": "Qualified", "s2": "Proposal", "won": "Closed won", "lost": "Closed lost"}


@pytest.fixture
def clock() -> SimClock:
    # A whole millisecond: the API writes times to the millisecond.
    return SimClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))


@pytest.fixture
def toy(clock: SimClock) -> Iterator[ToyCrm]:
    with ToyCrm(clock.now) as running:
        yield running


def settings(toy: ToyCrm, spec: Path = TOY_SPEC, **extra: Any) -> dict[str, Any]:
    return {"spec": str(spec), "base_url": toy.url, "inputs": {"api_key": API_KEY}, **extra}


def deals(messages: list[Any]) -> dict[str, OpportunityRecord]:
    out: dict[str, OpportunityRecord] = {}
    for record in of_type(messages, OpportunityRecord):
        out[record.external_id] = record
    return out


def test_a_full_read_maps_every_deal_as_an_independent_reading_of_the_api_does(
    toy: ToyCrm, clock: SimClock
) -> None:
    toy.add(23)
    clock.advance(60)
    messages = read(connector(settings(toy), clock), "opportunities")

    got = deals(messages)
    assert sorted(got, key=int) == [str(i) for i in range(1, 24)]
    for id, deal in toy.deals.items():
        record = got[str(id)]
        stage = ["s1", "s2", "won", "lost"][id % 4]
        assert record.amount == Decimal(id * 100) + Decimal("0.50")
        assert record.currency == "CNY"
        assert record.stage == STAGE_NAMES[stage]
        assert record.is_closed == (stage in ("won", "lost"))
        assert record.is_won == (stage == "won")
        assert record.probability == {"s1": 0.2, "s2": 0.5, "won": 1.0, "lost": 0.0}[stage]
        assert record.owner_external_id == f"u{id % 3}"
        assert record.pipeline == "toy"
        assert record.remote_updated_at == deal.updated
        assert record.raw is not None
        assert record.raw["title"] == deal.title
    # Three pages of ten: a checkpoint after each page but the last, then the final one.
    checkpoints = of_type(messages, Checkpoint)
    assert [c.state.get("page") for c in checkpoints[:-1]] == [{"cursor": "10"}, {"cursor": "20"}]
    assert last_state(messages) == {"since": clock.now().isoformat()}
    assert toy.count("/v1/deals") == 3
    assert toy.count("/v1/stages") == 1


def test_the_stage_table_is_published_when_the_api_has_no_stage_stream(toy: ToyCrm, clock: SimClock) -> None:
    conn = connector(settings(toy), clock)
    assert [s.name for s in conn.streams()] == ["pipeline_stages", "owners", "opportunities"]
    stages = of_type(read(conn, "pipeline_stages"), PipelineStageRecord)
    assert [(s.stage, s.sort_order, s.is_closed, s.is_won) for s in stages] == [
        ("Qualified", 0, False, False),
        ("Proposal", 1, False, False),
        ("Closed won", 2, True, True),
        ("Closed lost", 3, True, False),
    ]


def test_increments_read_the_window_again_from_the_lookback_and_never_skip_a_shared_timestamp(
    toy: ToyCrm, clock: SimClock
) -> None:
    toy.add(5)
    clock.advance(600)  # the first five are well before the next read's lookback
    first = read(connector(settings(toy), clock), "opportunities")
    state = last_state(first)
    boundary = clock.now()
    # Written after the read, at the very instant the read's window ended: shares its timestamp.
    toy.add(12, at=boundary)
    clock.advance(600)
    toy.touch(2, clock.now(), amount="¥9.00")
    clock.advance(5)

    second = read(connector(settings(toy), clock), "opportunities", state)
    got = deals(second)
    # The twelve written at the boundary (over two pages) and the touched deal, nothing older.
    assert sorted(got, key=int) == ["2", *[str(i) for i in range(6, 18)]]
    assert got["2"].amount == Decimal("9.00")
    sent = [r for r in toy.requests if r.path == "/v1/deals"][-1]
    assert sent.query["updated_since"] == [
        (boundary - timedelta(minutes=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ]


def test_a_read_cut_short_resumes_its_window_where_it_stopped(toy: ToyCrm, clock: SimClock) -> None:
    toy.add(25)
    clock.advance(10)
    conn = connector(settings(toy), clock)
    messages = conn.read(next(s for s in conn.streams() if s.name == "opportunities"), None)
    seen: list[str] = []
    resume = None
    for message in messages:
        if isinstance(message, OpportunityRecord):
            seen.append(message.external_id)
        if isinstance(message, Checkpoint):
            resume = message.state
            break
    assert resume is not None
    assert resume["page"] == {"cursor": "10"}
    clock.advance(300)
    toy.add(1)  # written after the first read began: outside its window, for the next one
    rest = read(connector(settings(toy), clock), "opportunities", resume)
    assert seen + list(deals(rest)) == [str(i) for i in range(1, 26)]
    # The window the resumed read finished is the first one's: the next read starts at its end.
    assert last_state(rest) == {"since": resume["until"]}


def test_deletions_come_from_the_endpoint_and_snapshots_end_complete(toy: ToyCrm, clock: SimClock) -> None:
    toy.add(6)
    clock.advance(10)
    state = last_state(read(connector(settings(toy), clock), "opportunities"))
    clock.advance(10)
    toy.delete(3, clock.now())
    toy.delete(4, clock.now())
    clock.advance(10)
    messages = read(connector(settings(toy), clock), "opportunities", state)
    assert [(t.external_id, t.deleted_at) for t in of_type(messages, Tombstone)] == [
        ("3", clock.now() - timedelta(seconds=10)),
        ("4", clock.now() - timedelta(seconds=10)),
    ]
    owners = read(connector(settings(toy), clock), "owners")
    assert sorted(o.external_id for o in of_type(owners, OwnerRecord)) == ["u0", "u1", "u2"]
    assert isinstance(owners[-2], SnapshotComplete)


def test_an_archived_flag_turns_records_into_tombstones(tmp_path: Path, toy: ToyCrm, clock: SimClock) -> None:
    toy.add(4)
    toy.touch(2, clock.now(), archived=True)
    spec = spec_variant(
        tmp_path, TOY_SPEC, streams__opportunities__deletions={"mode": "flag", "flag": "archived"}
    )
    messages = read(connector(settings(toy, spec), clock), "opportunities")
    assert sorted(deals(messages)) == ["1", "3", "4"]
    assert [t.external_id for t in of_type(messages, Tombstone)] == ["2"]


@pytest.mark.parametrize(
    ("request_spec", "pagination"),
    [
        (
            {
                "path": "/v1/deals/offset",
                "query": {"offset": "{{ page.offset }}", "limit": "{{ page.size }}"},
            },
            {"kind": "offset", "page_size": 5, "total": "total"},
        ),
        (
            {"path": "/v1/deals/page", "query": {"page": "{{ page.number }}", "limit": "{{ page.size }}"}},
            {"kind": "page", "page_size": 5, "has_more": "more"},
        ),
        (
            {"path": "/v1/deals/after", "query": {"after": "{{ page.last_id }}", "limit": "{{ page.size }}"}},
            {"kind": "keyset", "page_size": 5, "last_id": "id"},
        ),
        (
            {
                "method": "POST",
                "path": "/v1/deals/search",
                "body": {"after": "{{ page.last_id }}"},
                "query": {"limit": 5},
            },
            {"kind": "keyset", "page_size": 5, "last_id": "id"},
        ),
        (
            {"path": "/v1/deals/linked", "query": {"limit": 5}},
            {"kind": "link", "page_size": 5},
        ),
    ],
    ids=["offset", "page", "keyset", "keyset-post", "link"],
)
def test_every_pagination_kind_reads_every_record_once(
    tmp_path: Path, toy: ToyCrm, clock: SimClock, request_spec: dict[str, Any], pagination: dict[str, Any]
) -> None:
    toy.add(15)  # an exact multiple of the page size: the last page is full, the next one empty
    records = "@" if pagination["kind"] == "link" else "data"
    spec = spec_variant(
        tmp_path,
        TOY_SPEC,
        streams__opportunities__request=request_spec,
        streams__opportunities__pagination=pagination,
        streams__opportunities__records=records,
    )
    messages = read(connector(settings(toy, spec), clock), "opportunities")
    assert [r.external_id for r in of_type(messages, OpportunityRecord)] == [str(i) for i in range(1, 16)]


def test_errors_in_a_200_body_and_server_errors_are_retried_with_backoff(
    toy: ToyCrm, clock: SimClock
) -> None:
    toy.add(3)
    toy.body_errors = 2
    toy.fail("/v1/deals", 503, times=1)
    toy.fail("/v1/deals", 429, times=1, headers={"Retry-After": "7"})
    messages = read(connector(settings(toy), clock), "opportunities")
    assert len(deals(messages)) == 3
    # Stages lookup: two body errors (backoff), then deals: 503 (backoff), 429 (Retry-After: 7).
    assert len(clock.slept) == 4
    assert clock.slept[3] == 7.0
    assert all(0.5 <= wait <= 8 for wait in clock.slept[:3])


def test_retries_end_in_a_retriable_error_naming_the_request(toy: ToyCrm, clock: SimClock) -> None:
    toy.fail("/v1/stages", 500, times=10, body={"code": 500, "msg": "upstream timeout"})
    with pytest.raises(
        RetriableError, match=r"lookup stages: GET .*/v1/stages answered HTTP 500, code 500: upstream timeout"
    ):
        read(connector(settings(toy), clock), "opportunities")
    assert toy.count("/v1/stages") == 4  # limits.max_attempts


def test_refused_credentials_and_spent_quotas_stop_at_once(toy: ToyCrm, clock: SimClock) -> None:
    conn = connector({**settings(toy), "inputs": {"api_key": "wrong"}}, clock)
    with pytest.raises(FatalError, match="HTTP 401") as refused:
        conn.check()
    assert "wrong" not in str(refused.value)
    toy.fail("/v1/stages", 200, body={"code": 4029, "msg": "daily quota spent"})
    with pytest.raises(QuotaExhaustedError, match="daily quota spent"):
        read(connector(settings(toy), clock), "opportunities")
    assert toy.count("/v1/stages") == 2


def test_oauth_tokens_are_fetched_renewed_on_expiry_and_once_on_a_401(
    tmp_path: Path, toy: ToyCrm, clock: SimClock
) -> None:
    spec = spec_variant(
        tmp_path,
        TOY_SPEC,
        inputs={"client_id": {}, "client_secret": {"secret": True}, "refresh_token": {"secret": True}},
        auth={
            "type": "oauth2_refresh",
            "oauth2": {
                "token_url": "{{ inputs.token_url }}",
                "client_id": "{{ inputs.client_id }}",
                "client_secret": "{{ inputs.client_secret }}",
                "refresh_token": "{{ inputs.refresh_token }}",
            },
        },
    )
    data = spec.read_text(encoding="utf-8").replace("inputs:\n", "inputs:\n  token_url: {}\n", 1)
    spec.write_text(data, encoding="utf-8")
    toy.add(12)
    toy.token_ttl = 120
    inputs = {
        "token_url": f"{toy.url}/oauth/token",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
    }
    conn = connector({"spec": str(spec), "base_url": toy.url, "inputs": inputs}, clock)
    assert len(deals(read(conn, "opportunities"))) == 12
    assert toy.count("/oauth/token") == 1
    clock.advance(200)  # past the token's life: renewed before the next request
    state_free = read(conn, "opportunities")
    assert len(deals(state_free)) == 12
    assert toy.count("/oauth/token") == 2
    toy.tokens.clear()  # revoked early: a 401, one renewal, then it goes on
    assert len(deals(read(conn, "opportunities"))) == 12
    assert toy.count("/oauth/token") == 3
    bad = connector(
        {"spec": str(spec), "base_url": toy.url, "inputs": {**inputs, "refresh_token": "x"}}, clock
    )
    with pytest.raises(FatalError, match=r"OAuth token request .* refused .*invalid_grant"):
        bad.check()


def test_pacing_spaces_requests_by_the_spec_rate(tmp_path: Path, toy: ToyCrm, clock: SimClock) -> None:
    toy.add(30)
    spec = spec_variant(tmp_path, TOY_SPEC, limits={"requests_per_second": 4})
    read(connector(settings(toy, spec), clock), "opportunities")
    # stages, 3 pages of deals, the deletions: four waits of a quarter second between five requests.
    assert clock.slept == [0.25, 0.25, 0.25, 0.25]


def test_a_record_that_cannot_be_mapped_is_reported_and_the_rest_goes_on(
    toy: ToyCrm, clock: SimClock
) -> None:
    toy.add(4)
    toy.touch(3, clock.now(), amount="twelve apples")
    toy.touch(4, clock.now(), stage="s9")
    messages = read(connector(settings(toy), clock), "opportunities")
    assert sorted(deals(messages)) == ["1", "2"]
    bad = {b.key: b for b in of_type(messages, BadRecord)}
    assert bad["3"].field == "amount"
    assert "'twelve apples' is not an amount (amount)" in bad["3"].message
    assert bad["4"].field == "stage"
    assert "'s9' is not in lookup 'stages'" in bad["4"].message


def test_links_into_the_crm_come_from_the_spec(toy: ToyCrm, clock: SimClock) -> None:
    conn = connector(settings(toy), clock)
    assert conn.record_url("opportunities", "42") == "https://app.toy.example/deals/42"
    assert conn.record_url("owners", "u1") is None


def test_a_broken_spec_is_reported_with_its_file_and_line(tmp_path: Path) -> None:
    text = TOY_SPEC.read_text(encoding="utf-8").replace("kind: cursor, next: next_cursor", "kind: cursor")
    text = text.replace("auth: {type: bearer, token:", "auth: {type: beerer, token:")
    spec = tmp_path / "broken.yaml"
    spec.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.yaml") as caught:
        RestSettings.model_validate({"spec": str(spec), "inputs": {"api_key": "k"}})
    lines = [line for line in str(caught.value).splitlines() if "broken.yaml" in line]
    auth_line = 1 + text.splitlines().index(next(line for line in text.splitlines() if "beerer" in line))
    assert any(f"broken.yaml:{auth_line}: auth.type:" in line for line in lines), lines
    assert any(
        "streams.opportunities.pagination: Value error, a cursor pagination" in line or "pagination:" in line
        for line in lines
    ), lines


def test_a_connection_is_checked_against_its_spec(toy: ToyCrm) -> None:
    with pytest.raises(ValueError, match=r"api_key: required by spec toy") as missing:
        RestSettings.model_validate({"spec": str(TOY_SPEC)})
    assert "streams" not in str(missing.value)
    with pytest.raises(ValueError, match=r"api_kee: spec toy has no input 'api_kee'"):
        RestSettings.model_validate({"spec": str(TOY_SPEC), "inputs": {"api_key": "k", "api_kee": "k"}})
    with pytest.raises(
        ValueError,
        match=r"deals: spec toy has no stream 'deals' \(its streams: owners, opportunities\)",
    ):
        RestSettings.model_validate(
            {"spec": str(TOY_SPEC), "inputs": {"api_key": "k"}, "streams": {"deals": {}}}
        )
    with pytest.raises(ValueError, match=r"no shipped spec named 'nosuch'"):
        RestSettings.model_validate({"spec": "nosuch"})
    # A template naming a key a lookup does not have says which keys it has.
    conn_settings = {
        **settings(toy),
        "streams": {"opportunities": {"fields": {"name": {"path": "{{ lookups.stages['nope'] }}"}}}},
    }
    conn = connector(conn_settings, SimClock())
    with pytest.raises(ConnectorConfigError, match=r"lookup stages has no key 'nope' \(it has: 's1', 's2'"):
        read(conn, "opportunities")


@pytest.mark.parametrize(
    "written",
    ["1054.5", "0.1", "22700.00", "99999999999999.9", "1e3", "-0.05", "123456789012345"],
)
def test_json_amounts_are_read_exactly_as_written(written: str) -> None:
    (value,) = _loads(f"[{written}]".encode())
    amount = exact(value) if isinstance(value, float) else Decimal(value)
    assert amount == Decimal(written)


def test_a_json_amount_too_long_for_a_float_is_refused_not_rounded() -> None:
    (value,) = _loads(b"[1234567890123456.75]")
    with pytest.raises(ValueError, match="more than 15 significant digits"):
        exact(value)
    # An integer beyond 64 bits arrives as a float too: refused as well, as an amount or as text.
    (big,) = _loads(b"[123456789012345678901234567890]")
    with pytest.raises(ValueError, match="more than 15 significant digits"):
        exact(big)
    with pytest.raises(ValueError, match="more than 15 significant digits"):
        _text(big)
    assert _text(_loads(b"[4150868000001000]")[0]) == "4150868000001000"


# -- activities: durations, kinds from a connection's table, fields that depend on an input ---------


def activity_mapper(fields: dict[str, Any], inputs: dict[str, Any] | None = None) -> RecordMapper:
    stream = Stream.model_validate(
        {"entity": "activities", "request": {"path": "/x"}, "records": "@", "fields": fields}
    )
    variables = {"inputs": Table("inputs", inputs or {}, "input")}
    return RecordMapper("activities", stream, variables, {}, ZoneInfo("UTC"))


ACTIVITY = {"id": 7, "kind": "Site visit", "at": "2026-03-02T09:00:00Z", "took": "01:30", "done": 1}
ACTIVITY_FIELDS: dict[str, Any] = {
    "external_id": "id",
    "type": {"path": "kind", "map": "{{ inputs.kinds }}"},
    "subtype": "kind",
    "occurred_at": "at",
    "duration_seconds": "took",
    "is_completed": "done",
}


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("01:30", 5400), ("1:02:03", 3723), ("0:00", 0), (90, 90), ("90", 90), (120.0, 120)],
)
def test_a_duration_is_read_as_whole_seconds_from_a_number_or_a_clock(written: object, seconds: int) -> None:
    mapper = activity_mapper(ACTIVITY_FIELDS, {"kinds": {"Site visit": "visit"}})
    record = mapper({**ACTIVITY, "took": written})
    assert isinstance(record, ActivityRecord)
    assert record.duration_seconds == seconds
    assert (record.type, record.subtype, record.is_completed) == ("visit", "Site visit", True)
    assert record.occurred_at == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize("written", ["1:75", "ninety", "-5", 1.5, True])
def test_a_duration_that_is_not_one_names_the_record_and_the_field(written: object) -> None:
    mapper = activity_mapper(ACTIVITY_FIELDS, {"kinds": {"Site visit": "visit"}})
    with pytest.raises(SkippableRecordError, match=r"^record 7: duration_seconds: .* not a duration"):
        mapper({**ACTIVITY, "took": written})


def test_a_kind_the_connection_does_not_map_is_kept_and_an_unfit_one_is_a_bad_record() -> None:
    mapper = activity_mapper(ACTIVITY_FIELDS, {"kinds": {"phone": "call"}})
    assert mapper({**ACTIVITY, "kind": "phone"}).type == "call"  # type: ignore[union-attr]
    assert mapper({**ACTIVITY, "kind": "demo"}).type == "demo"  # type: ignore[union-attr]
    record = mapper(ACTIVITY)  # "Site visit" is no kind: the store refuses it, naming the record
    with pytest.raises(ValueError, match="type must be one of call, meeting"):
        record.validate()  # type: ignore[union-attr]


def test_a_map_naming_an_input_that_is_no_table_is_a_configuration_error() -> None:
    with pytest.raises(ConnectorConfigError, match=r"fields\.type\.map: .* is not a table of values"):
        activity_mapper(ACTIVITY_FIELDS, {"kinds": "visit"})


def test_an_event_lasts_from_its_start_to_its_end_or_has_no_duration() -> None:
    fields = {
        **ACTIVITY_FIELDS,
        "duration_seconds": {"template": "{{ record.get('start') | seconds_between(record.get('end')) }}"},
    }
    mapper = activity_mapper(fields, {"kinds": {}})
    start = "2026-03-02T09:00:00+01:00"
    cases = {"2026-03-02T09:45:30+01:00": 2730, "2026-03-02T08:00:00Z": 0, "2026-03-02T07:00:00Z": None}
    for end, seconds in cases.items():
        assert mapper({**ACTIVITY, "start": start, "end": end}).duration_seconds == seconds  # type: ignore[union-attr]
    for unfit in (None, "soon", "2026-03-02T10:00:00"):  # missing, not an instant, naive beside aware
        assert mapper({**ACTIVITY, "start": start, "end": unfit}).duration_seconds is None  # type: ignore[union-attr]


def test_a_stream_whose_input_is_not_given_is_not_offered_nor_its_lookup_fetched(
    tmp_path: Path, toy: ToyCrm, clock: SimClock
) -> None:
    toy_spec = yaml.safe_load(TOY_SPEC.read_text(encoding="utf-8"))
    spec = spec_variant(
        tmp_path,
        TOY_SPEC,
        lookups={
            **toy_spec["lookups"],
            "extra": {
                "when": "{{ inputs.extra_path }}",
                "request": {"path": "{{ inputs.extra_path }}"},
                "records": "data",
                "key": "id",
                "value": "name",
            },
        },
        streams__more_owners={
            "entity": "owners",
            "when": "{{ inputs.extra_path }}",
            "request": {"path": "/owners-elsewhere"},
            "records": "data",
            "fields": {"external_id": "id"},
        },
        inputs={**toy_spec["inputs"], "extra_path": {}},
    )
    conn = connector(settings(toy, spec), clock)
    assert "more_owners" not in [s.name for s in conn.streams()]
    read(conn, "opportunities")
    assert not [r for r in toy.requests if "elsewhere" in r.path]
