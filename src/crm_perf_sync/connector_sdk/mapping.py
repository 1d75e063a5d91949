"""What connectors that map records by configuration share: YAML-proof text values and stage tables.

A stage table classifies opportunities by their stage (open, won, lost, and the stage's
probability) where the CRM's records do not say it themselves, and is published as the
``pipeline_stages`` stream. The csv connector's and the rest connector's mappings both use it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import BeforeValidator, Field, model_validator

from crm_perf_sync.connector_sdk.errors import SkippableRecordError
from crm_perf_sync.connector_sdk.records import PipelineStageRecord
from crm_perf_sync.kit.schema import StrictModel

# --- YAML-proof scalars ---------------------------------------------------------------------------


def _text(value: object, what: str) -> str:
    # PyYAML reads unquoted Yes/No/On/Off as booleans: the original spelling is lost, so an
    # unquoted one can never match a cell. Refuse it with the fix rather than guess.
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r} is a YAML boolean; quote it ('Yes', 'No', 'true', ...)")
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"{what} must be a string, got {type(value).__name__}")


def _text_list(value: object) -> object:
    if isinstance(value, str | int | float | bool):
        value = [value]
    if isinstance(value, list | tuple):
        return tuple(_text(item, "value") for item in value)
    return value


def _value_map(value: object) -> object:
    if not isinstance(value, dict):
        return value
    out: dict[str, str | None] = {}
    for key, target in value.items():
        # A boolean target is unambiguous ("true"/"false" parse back for boolean fields).
        if isinstance(target, bool):
            target = "true" if target else "false"
        out[_text(key, "map key")] = None if target is None else _text(target, "map value")
    return out


TextList = Annotated[tuple[str, ...], BeforeValidator(_text_list)]
ValueMap = Annotated[dict[str, str | None], BeforeValidator(_value_map)]

# --- stage table -------------------------------------------------------------------------------------


class StageDef(StrictModel):
    """One stage of the table: what a deal in it is (its order is the table's order)."""

    stage: str = Field(min_length=1)
    label: str | None = None
    aliases: TextList = Field(default=(), description="other spellings of the stage in the file")
    probability: float | None = Field(
        default=None, ge=0.0, le=1.0, description="overrides the row's probability; unset: the row's"
    )
    is_closed: bool = False
    is_won: bool = False

    @model_validator(mode="after")
    def _won_is_closed(self) -> Self:
        if self.is_won and "is_closed" in self.model_fields_set and not self.is_closed:
            raise ValueError("a won stage is closed: drop is_closed: false")
        return self


class StageTable(StrictModel):
    """Classifies opportunities by stage, and is published as the ``pipeline_stages`` stream."""

    pipeline: str = Field(default="default", min_length=1)
    unknown: Literal["error", "keep"] = Field(
        default="error", description="a stage the table does not list: a bad record, or kept unclassified"
    )
    ignore_case: bool = False
    table: list[StageDef] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: dict[str, str] = {}
        for entry in self.table:
            for name in (entry.stage, *entry.aliases):
                folded = name.casefold() if self.ignore_case else name
                if folded in seen:
                    raise ValueError(f"stage {name!r} is listed twice (also under {seen[folded]!r})")
                seen[folded] = entry.stage
        return self


class StageClassifier:
    """Applies the stage table: canonical stage name, is_closed / is_won, and the stage's probability."""

    def __init__(self, table: StageTable, source: str = "not mapped") -> None:
        self.table = table
        self.source = source
        self.by_name: dict[str, StageDef] = {}
        for entry in table.table:
            for name in (entry.stage, *entry.aliases):
                self.by_name[name.casefold() if table.ignore_case else name] = entry
        self.known = ", ".join(repr(entry.stage) for entry in table.table)

    def classify(self, values: dict[str, Any], where: str) -> None:
        """Classify the record whose ``values`` are given; ``where`` names it in a bad record's message."""
        if values.get("pipeline") is None:
            values["pipeline"] = self.table.pipeline
        stage = values.get("stage")
        if stage is None:
            if self.table.unknown == "error":
                # Every deal has a stage in a CRM: without one the table cannot classify the row.
                raise SkippableRecordError(f"{where}: stage is empty ({self.source})", field="stage")
            return
        entry = self.by_name.get(stage.casefold() if self.table.ignore_case else stage)
        if entry is None:
            if self.table.unknown == "error":
                raise SkippableRecordError(
                    f"{where}: stage {stage!r} is not in the stage table (known: {self.known})",
                    field="stage",
                )
            return
        values["stage"] = entry.stage
        values["is_closed"] = entry.is_closed or entry.is_won
        values["is_won"] = entry.is_won
        if entry.probability is not None:
            # The table is the authority on closed stages; a rep's stale percentage is not.
            values["probability"] = entry.probability

    def records(self) -> list[PipelineStageRecord]:
        """The table as pipeline stage records, in its order."""
        return [
            PipelineStageRecord(
                pipeline=self.table.pipeline,
                stage=entry.stage,
                sort_order=index,
                probability=entry.probability,
                is_closed=entry.is_closed or entry.is_won,
                is_won=entry.is_won,
                label=entry.label,
            )
            for index, entry in enumerate(self.table.table)
        ]
