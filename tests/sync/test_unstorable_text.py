"""Characters no store can hold (NUL, unpaired surrogates) are handled once, alike on both stores.

PostgreSQL refuses a NUL in text and ``\\u0000`` in jsonb, and neither driver encodes an unpaired
surrogate; SQLite would keep a NUL. Whatever the connector, the engine removes such characters
from a record's values and payload with a recorded warning, or reports the record as bad when
they are in its id, and the run goes on.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from crm_perf_sync.connector_sdk import BadRecord, Checkpoint, Message, Tombstone
from crm_perf_sync.kit.db import session_scope
from crm_perf_sync.models import Opportunity, SyncRecordError
from crm_perf_sync.sync.rows import Removed, to_row
from tests.sync.scripted import Script
from tests.sync.test_engine import OPPS, opp, run


def _errors(factory: sessionmaker[Session], run_id: int) -> list[tuple[str, str | None, str | None, str]]:
    with session_scope(factory) as session:
        rows = session.execute(
            select(
                SyncRecordError.level,
                SyncRecordError.record_key,
                SyncRecordError.field,
                SyncRecordError.message,
            )
            .where(SyncRecordError.run_id == run_id)
            .order_by(SyncRecordError.id)
        ).all()
    return [(level, key, field, message) for level, key, field, message in rows]


def _script() -> Script:
    records: list[Message] = [
        opp(
            1,
            name="Deal\x00 1",
            custom={"note": "a\x00b", "size\x00": 2},
            raw={"Id": "00600001", "Note\x00": "x\x00y", "lines": [{"text": "p\x00q"}]},
        ),
        opp(2, name="Deal \ud800 2"),
        opp(3, external_id="006\x0000003"),
        BadRecord(
            "cell 'a\x00b' is not an amount", key="006\x0000009", field="amount", raw={"Amount\x00": "a\x00b"}
        ),
        # Text that merely looks like an escaped NUL is kept as it is, without a warning.
        opp(4, raw={"Id": "00600004", "path": "C:\\u0000\\files"}),
        Tombstone("006\x0000005"),
    ]
    return Script(streams=[OPPS], pages={"opportunities": [records]})


def test_unstorable_characters_are_removed_with_a_warning_or_make_a_bad_record(
    session_factory: sessionmaker[Session],
) -> None:
    outcome = run(session_factory, _script(), batch_size=100)

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.total("inserted"), outcome.total("skipped"), outcome.total("warnings")) == (3, 3, 2)
    assert "skipped 3 bad records, 2 warnings" in outcome.summary()
    with session_scope(session_factory) as session:
        deals = {deal.external_id: deal for deal in session.scalars(select(Opportunity))}
        assert set(deals) == {"00600001", "00600002", "00600004"}
        first = deals["00600001"]
        assert (first.name, first.custom) == ("Deal 1", {"note": "ab", "size": 2})
        assert first.raw == {"Id": "00600001", "Note": "xy", "lines": [{"text": "pq"}]}
        assert deals["00600002"].name == "Deal  2"
        assert deals["00600004"].raw == {"Id": "00600004", "path": "C:\\u0000\\files"}
    assert _errors(session_factory, outcome.run_id) == [
        (
            "warning",
            "00600001",
            "name",
            "NUL characters removed from name, custom.note, custom.size, raw.Note, raw.lines[0].text: "
            "no store can hold them",
        ),
        ("warning", "00600002", "name", "unpaired surrogates removed from name: no store can hold them"),
        (
            "error",
            "006\\x0000003",
            "external_id",
            "invalid record: external_id '006\\x0000003' holds a NUL character, which no store can hold",
        ),
        ("error", "006\\x0000009", "amount", "cell 'a\\x00b' is not an amount"),
        (
            "error",
            "006\\x0000005",
            "external_id",
            "invalid deletion: external_id '006\\x0000005' holds a NUL character, which no store can hold",
        ),
    ]
    with session_scope(session_factory) as session:
        reported = session.scalars(
            select(SyncRecordError.raw).where(SyncRecordError.record_key == "006\\x0000009")
        ).one()
    assert reported == {"Amount\\x00": "a\\x00b"}

    # The stored rows are what the connector sends, less those characters: a re-read changes nothing.
    again = run(session_factory, _script(), batch_size=100, full=True)
    assert again.status == "succeeded", again.error
    assert (again.total("inserted"), again.total("unchanged"), again.total("warnings")) == (0, 3, 2)


def test_a_checkpoint_holding_a_nul_fails_the_run_with_a_message(
    session_factory: sessionmaker[Session],
) -> None:
    script = Script(streams=[OPPS], pages={"opportunities": [[opp(1), Checkpoint({"cursor": "a\x00b"})]]})
    outcome = run(session_factory, script, batch_size=100)

    assert outcome.status == "failed"
    assert outcome.error == (
        "stream 'opportunities' yielded a checkpoint holding a NUL character or an unpaired surrogate, "
        "which no store can hold"
    )


def test_both_kinds_are_removed_wherever_they_are_in_one_row() -> None:
    # A surrogate in a column and a NUL in the payload: neither hides the other.
    removed = Removed()
    row = to_row("opportunities", opp(1, name="Deal\ud800", raw={"Note": "x\x00y", "Id": "1"}), removed)
    assert (row["name"], str(row["raw"])) == ("Deal", '{"Id":"1","Note":"xy"}')
    assert removed.message() == (
        "NUL characters and unpaired surrogates removed from name, raw.Note: no store can hold them"
    )
    clean = to_row("opportunities", opp(1, name="Deal", raw={"Note": "xy", "Id": "1"}))
    assert row["content_hash"] == clean["content_hash"]


def _overlong_script() -> Script:
    records: list[Message] = [
        opp(1, name="N" * 300, lead_source="A" * 256, stage="S" * 255),
        opp(2, external_id="6" * 256),
        opp(3, owner_external_id="5" * 300),
    ]
    return Script(streams=[OPPS], pages={"opportunities": [records]})


def test_text_longer_than_its_column_is_cut_with_a_warning_and_an_overlong_id_is_a_bad_record(
    session_factory: sessionmaker[Session],
) -> None:
    # PostgreSQL refused such a row (and the batch with it); SQLite stored it whole. Now both
    # store the same thing.
    outcome = run(session_factory, _overlong_script(), batch_size=100)

    assert outcome.status == "succeeded", outcome.error
    assert (outcome.total("inserted"), outcome.total("skipped"), outcome.total("warnings")) == (1, 2, 1)
    with session_scope(session_factory) as session:
        (deal,) = session.scalars(select(Opportunity))
    assert (deal.external_id, deal.name, deal.lead_source, deal.stage) == (
        "00600001",
        "N" * 255,
        "A" * 255,
        "S" * 255,
    )
    assert _errors(session_factory, outcome.run_id) == [
        ("warning", "00600001", "name", "name, lead_source cut to the length the store holds"),
        (
            "error",
            "6" * 256,
            "external_id",
            "invalid record: external_id is 256 characters long; the store holds at most 255",
        ),
        (
            "error",
            "00600003",
            "owner_external_id",
            "invalid record: owner_external_id is 300 characters long; the store holds at most 255",
        ),
    ]
    again = run(session_factory, _overlong_script(), batch_size=100, full=True)
    assert again.status == "succeeded", again.error
    assert (again.total("inserted"), again.total("unchanged"), again.total("warnings")) == (0, 1, 1)
