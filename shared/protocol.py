"""The trial protocol as data: everything trial-specific lives in a YAML file validated at start.

This is the minimal protocol the walking skeleton needs (arms, SAE clock, contacts); the DLT and
escalation sections grow with the protocol engine.
"""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_PROTOCOL = "nct07212335.yaml"
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]


class ProtocolModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Arm(ProtocolModel):
    id: Annotated[str, Field(min_length=1, max_length=40)]
    label: str
    infusions: int = Field(ge=1, le=52)
    interval_days: int | None = Field(default=None, ge=1)
    cells_per_kg: Decimal = Field(gt=0)

    @model_validator(mode="after")
    def _interval_for_repeats(self) -> Arm:
        if self.infusions > 1 and self.interval_days is None:
            raise ValueError("an arm with more than one infusion needs interval_days")
        return self


class SaeRules(ProtocolModel):
    report_within_hours: int = Field(default=24, ge=1, le=24 * 30)
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)


class LabAlerts(ProtocolModel):
    """When a graded lab result pages someone: at or above the threshold and worse than the subject's baseline."""

    min_grade: int = Field(default=3, ge=1, le=4)
    term_min_grade: dict[str, Annotated[int, Field(ge=1, le=4)]] = Field(
        default_factory=dict, description="Per CTCAE term overrides of min_grade"
    )
    notify_roles: list[str] = Field(default_factory=lambda: ["safety_officer"], min_length=1)

    def threshold(self, term: str) -> int:
        return self.term_min_grade.get(term, self.min_grade)


class Contact(ProtocolModel):
    name: str
    email: Email
    role: Annotated[str, Field(min_length=1)]


class Protocol(ProtocolModel):
    trial_id: Annotated[str, Field(min_length=1, max_length=64)]
    title: str
    arms: list[Arm] = Field(min_length=1)
    dlt_window_days: int = Field(default=28, ge=1, le=365)
    sae: SaeRules = SaeRules()
    lab_alerts: LabAlerts = LabAlerts()
    contacts: list[Contact] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        ids = [arm.id for arm in self.arms]
        if len(set(ids)) != len(ids):
            raise ValueError(f"arm ids must be unique, got {ids}")
        roles = {c.role for c in self.contacts}
        for section, wanted in (("sae", self.sae.notify_roles), ("lab_alerts", self.lab_alerts.notify_roles)):
            missing = [role for role in wanted if role not in roles]
            if missing:
                raise ValueError(f"{section}.notify_roles names roles no contact has: {missing}")
        return self

    def arm(self, arm_id: str) -> Arm | None:
        return next((arm for arm in self.arms if arm.id == arm_id), None)

    def contacts_with_role(self, role: str) -> list[Contact]:
        return [c for c in self.contacts if c.role == role]


class ProtocolError(ValueError):
    """A protocol file that cannot be used; `problems` lists each error with its path in the file."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def parse_protocol(text: str, source: str = "<protocol>") -> Protocol:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProtocolError(source, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ProtocolError(source, ["the file must be a YAML mapping"])
    try:
        return Protocol.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}" for err in exc.errors()]
        raise ProtocolError(source, problems) from exc


def load_protocol(path: Path | None) -> Protocol:
    """Load the protocol at `path`, or the shipped NCT07212335 example when no path is configured."""
    if path is None:
        text = resources.files("shared.protocols").joinpath(DEFAULT_PROTOCOL).read_text(encoding="utf-8")
        return parse_protocol(text, f"(shipped) {DEFAULT_PROTOCOL}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(str(path), [f"cannot read: {exc.strerror}"]) from exc
    return parse_protocol(text, str(path))
