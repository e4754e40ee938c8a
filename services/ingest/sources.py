"""The sources file: which EDC systems may post to ingest, how they authenticate, and how their data maps.

Integrators connect by configuration, not code. The file (SENTINEL_SOURCES_PATH) is validated at start and
every error names its path (`sources.rave.mapping.forms.AE.items.AE.AESER`), as `sentinel sources check`
prints it. Secrets may live in the environment; the file then names the variable (`secret_env`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from shared.events import Relatedness
from shared.webhook_signatures import WebhookSecret

SOURCE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
PLACEHOLDERS = {"changeme", "secret", "token", "password", "xxx", "todo"}


class SourcesError(ValueError):
    """The sources file is wrong; `problems` lists each error as `path: message`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid sources file:\n  " + "\n  ".join(problems))
        self.problems = problems


class SourceKind(StrEnum):
    CANONICAL = "canonical"
    FHIR = "fhir"
    ODM = "odm"
    SDTM = "sdtm"
    REDCAP = "redcap"


ENDPOINT_FOR_KIND = {
    SourceKind.CANONICAL: "events",
    SourceKind.FHIR: "fhir",
    SourceKind.ODM: "odm",
    SourceKind.SDTM: "sdtm",
    SourceKind.REDCAP: "redcap-det",
}


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthScheme(StrEnum):
    STANDARD_WEBHOOKS = "standard-webhooks"
    GITHUB = "github"
    BEARER = "bearer"


class AuthConfig(ConfigModel):
    """Standard Webhooks (`whsec_` secret), GitHub X-Hub-Signature-256 (shared secret), or a bearer token for
    senders that cannot sign (REDCap's Data Entry Trigger: there the token may also come as `?token=`)."""

    scheme: AuthScheme = AuthScheme.STANDARD_WEBHOOKS
    secret: SecretStr | None = None
    secret_env: str | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> AuthConfig:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of 'secret' or 'secret_env'")
        return self


class AnalyteMap(ConfigModel):
    test: Annotated[str, Field(min_length=1, max_length=40)]
    unit: str | None = None
    lln_item: str | None = None
    uln_item: str | None = None
    range_item: str | None = Field(default=None, description="An item holding the range as free text")
    lln: Decimal | None = None
    uln: Decimal | None = None


class FieldMap(ConfigModel):
    """How one form (ODM FormOID) or instrument (REDCap) becomes canonical events.

    `items` maps the sender's item/field name to one of our fields (see `AE_FIELDS`, `RECORD_FIELDS`);
    `analytes` maps one item per lab analyte (wide lab forms) to the test, its fixed unit and its range.
    """

    type: Literal["ae", "lab", "dose", "enrollment", "subject_status", "vitals", "ae_review", "transfusion", "sample"]
    items: dict[str, str] = Field(default_factory=dict)
    analytes: dict[str, AnalyteMap] = Field(default_factory=dict)
    baseline: bool = False
    sample_kind: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        default=None, description="A sample form's kind (e.g. immunology) when no item carries it"
    )
    product: Literal["red_cells", "platelets", "other"] | None = Field(
        default=None, description="A transfusion form for one product (a platelet form) when no item carries it"
    )

    @model_validator(mode="after")
    def _fields_known(self) -> FieldMap:
        allowed = MAPPABLE_FIELDS[self.type]
        unknown = sorted(
            {
                field
                for field in self.items.values()
                if field not in allowed and not (self.type == "enrollment" and HISTORY_TARGET.match(field))
            }
        )
        if unknown:
            raise ValueError(f"unknown target field(s) {unknown} for a {self.type} form; allowed: {sorted(allowed)}")
        if self.type == "ae_review" and {"assessed_at", "new_aes"} - set(self.items.values()):
            raise ValueError("an ae_review form needs items mapped to 'assessed_at' and 'new_aes' (CDASH AEYN)")
        if self.type == "subject_status" and "status" not in self.items.values():
            raise ValueError("a subject_status form needs an item mapped to 'status'")
        if self.type == "ae" and "term" not in self.items.values():
            raise ValueError("an ae form needs an item mapped to 'term'")
        if self.type == "lab" and not self.analytes and "value" not in self.items.values():
            raise ValueError("a lab form needs 'analytes' (one item per analyte) or an item mapped to 'value'")
        if self.type == "transfusion" and "administered_at" not in self.items.values():
            raise ValueError("a transfusion form needs an item mapped to 'administered_at'")
        if self.type == "transfusion" and self.product is None and "product" not in self.items.values():
            raise ValueError("a transfusion form needs an item mapped to 'product', or 'product' set on the form")
        if self.type == "sample" and "collected_at" not in self.items.values():
            raise ValueError("a sample form needs an item mapped to 'collected_at'")
        if self.type == "sample" and self.sample_kind is None and "kind" not in self.items.values():
            raise ValueError("a sample form needs an item mapped to 'kind', or 'sample_kind' set on the form")
        if self.type != "lab" and self.analytes:
            raise ValueError("'analytes' only applies to lab forms")
        return self


AE_FIELDS = frozenset(
    {
        "id",
        "term",
        "ctcae_term",
        "meddra_code",
        "grade",
        "severity",
        "serious",
        "death",
        "life_threatening",
        "hospitalization",
        "disability",
        "congenital_anomaly",
        "medically_important",
        "relatedness",
        "onset",
        "onset_time",
        "end",
        "ongoing",
        "outcome",
        "action_taken",
        "awareness_at",
        "version",
        "status",
        "replaced_by",  # with a status: the AE id the site re-entered the AE under (it keeps this AE's SAE clock)
    }
)
LAB_FIELDS = frozenset(
    {
        "id",
        "test",
        "loinc",
        "value",
        "unit",
        "lln",
        "uln",
        "range",
        "collected_at",
        "baseline",
        "anticoagulated",
        "status",
    }
)
DOSE_FIELDS = frozenset(
    {
        "id",
        "number",
        "administered_at",
        "cells_per_kg",
        "total_cells",
        "weight_kg",
        "lot",
        "release_released",
        "release_viability_percent",
        *(
            f"release_{test}"
            for test in ("sterility", "pathogens", "mycoplasma", "endotoxin", "purity", "tumorigenicity", "identity")
        ),
        "premedication_drug",
        "premedication_dose_mg",
        "premedication_given_at",
        "status",
    }
)
ENROLLMENT_FIELDS = frozenset({"arm", "enrolled_at", "weight_kg", "car_t_infused_on", "status"})
HISTORY_TARGET = re.compile(r"^history(_on)?\.[a-z][a-z0-9_]{0,39}$")
"""Enrolment targets for exclusions by history: `history.<code>` (yes/no) and `history_on.<code>` (date)."""
SUBJECT_STATUS_FIELDS = frozenset({"status", "effective_on", "reason"})
VITALS_FIELDS = frozenset(
    {
        "id",
        "measured_at",
        "temperature_c",
        "temperature_unit",
        "systolic_bp",
        "diastolic_bp",
        "heart_rate",
        "respiratory_rate",
        "spo2",
        "dose_id",
        "status",
    }
)
AE_REVIEW_FIELDS = frozenset({"id", "assessed_at", "visit", "new_aes", "status"})
"""CDASH AEYN ("Any adverse events?") maps to `new_aes`: "N" is the record that the AE review found none new."""
TRANSFUSION_FIELDS = frozenset({"id", "product", "administered_at", "units", "volume_ml", "status"})
SAMPLE_FIELDS = frozenset({"id", "kind", "collected_at", "visit", "status"})
MAPPABLE_FIELDS = {
    "ae": AE_FIELDS,
    "lab": LAB_FIELDS,
    "dose": DOSE_FIELDS,
    "enrollment": ENROLLMENT_FIELDS,
    "subject_status": SUBJECT_STATUS_FIELDS,
    "vitals": VITALS_FIELDS,
    "ae_review": AE_REVIEW_FIELDS,
    "transfusion": TRANSFUSION_FIELDS,
    "sample": SAMPLE_FIELDS,
}


class CodeLists(ConfigModel):
    """Per-source value maps; they win over the built-in spellings (EDC-FORMATS 2.6)."""

    yes_no: dict[str, bool] = Field(default_factory=dict)
    outcome: dict[str, str] = Field(default_factory=dict)
    relatedness: dict[str, Relatedness] = Field(default_factory=dict)
    grade: dict[str, Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=dict)


class SourceMapping(ConfigModel):
    forms: dict[str, FieldMap] = Field(
        default_factory=dict, description="ODM FormOID or REDCap instrument -> how it maps"
    )
    codelists: CodeLists = Field(default_factory=CodeLists)
    loinc: dict[str, str] = Field(
        default_factory=dict, description="Extra LOINC -> LBTESTCD entries (many-to-one); win over the defaults"
    )
    subject: Literal["label", "key"] = Field(
        default="label", description="ODM: the human label (OpenClinica StudySubjectID, Rave SubjectName) or SubjectKey"
    )
    baseline_events: list[str] = Field(
        default_factory=list, description="ODM StudyEventOIDs or REDCap event names whose labs are baseline"
    )


class RateLimit(ConfigModel):
    requests_per_minute: Decimal = Field(gt=0)
    burst: int = Field(ge=1)


class RedcapConfig(ConfigModel):
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    project_id: Annotated[str, Field(pattern=r"^\d+$")]
    token: SecretStr | None = None
    token_env: str | None = None
    reconcile_minutes: int = Field(default=60, ge=1, le=24 * 60)
    overlap_minutes: int = Field(default=10, ge=0, le=24 * 60)

    @model_validator(mode="after")
    def _one_token(self) -> RedcapConfig:
        if (self.token is None) == (self.token_env is None):
            raise ValueError("give exactly one of 'token' or 'token_env'")
        return self

    @property
    def api_url(self) -> str:
        return self.base_url.rstrip("/") + "/api/"


class SourceConfig(ConfigModel):
    kind: SourceKind
    trial: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="The trial this source may post for; events for another trial are refused"
    )
    default_site: Annotated[str, Field(min_length=1, max_length=200)] = "UNSPECIFIED"
    timezone: str = Field(default="UTC", description="IANA zone for the sender's date-times without an offset")
    auth: AuthConfig
    max_body_bytes: int | None = Field(default=None, ge=1024, le=200_000_000)
    rate_limit: RateLimit | None = None
    mapping: SourceMapping = Field(default_factory=SourceMapping)
    redcap: RedcapConfig | None = None

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _kind_needs(self) -> SourceConfig:
        if self.kind in {SourceKind.ODM, SourceKind.REDCAP} and not self.mapping.forms:
            raise ValueError(f"a {self.kind} source needs mapping.forms (its forms are study-specific)")
        if self.kind == SourceKind.REDCAP and self.redcap is None:
            raise ValueError("a redcap source needs a 'redcap' section (base_url, project_id, token)")
        if self.kind == SourceKind.REDCAP and self.trial is None:
            raise ValueError("a redcap source needs 'trial': pulled records do not name it")
        if self.kind != SourceKind.REDCAP and self.redcap is not None:
            raise ValueError("only redcap sources take a 'redcap' section")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class SourcesFile(ConfigModel):
    sources: dict[str, SourceConfig]

    @field_validator("sources")
    @classmethod
    def _ids(cls, sources: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        for source_id in sources:
            if not SOURCE_ID.fullmatch(source_id):
                raise ValueError(f"source id {source_id!r} must be 1-100 of A-Z a-z 0-9 _ . -")
        return sources


class Credential(BaseModel):
    """A resolved secret: what the request must prove; never logged (`SecretStr`, and a key without a repr)."""

    model_config = ConfigDict(frozen=True)

    scheme: AuthScheme
    value: SecretStr
    webhook_secret: WebhookSecret | None = Field(default=None, repr=False)


class Source(BaseModel):
    """A source ready to serve: its configuration with secrets resolved."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    config: SourceConfig
    credential: Credential
    redcap_token: SecretStr | None = None


def resolve(config: SourcesFile, env: Mapping[str, str]) -> dict[str, Source]:
    """Resolve secrets from the file or the named environment variables; every problem is reported at once."""
    problems: list[str] = []
    sources: dict[str, Source] = {}
    for source_id, source in config.sources.items():
        where = f"sources.{source_id}"
        credential = _credential(source.auth, env, f"{where}.auth", problems)
        token = None
        if source.redcap is not None:
            token = _secret(source.redcap.token) or env.get(source.redcap.token_env or "")
            if not token:
                problems.append(f"{where}.redcap.token_env: environment variable {source.redcap.token_env} is not set")
        if credential is not None:
            redcap_token = SecretStr(token) if token else None
            sources[source_id] = Source(id=source_id, config=source, credential=credential, redcap_token=redcap_token)
    if problems:
        raise SourcesError(problems)
    return sources


def _credential(auth: AuthConfig, env: Mapping[str, str], where: str, problems: list[str]) -> Credential | None:
    value = _secret(auth.secret) if auth.secret is not None else env.get(auth.secret_env or "")
    if not value:
        problems.append(f"{where}.secret_env: environment variable {auth.secret_env} is not set")
        return None
    if value.strip().lower() in PLACEHOLDERS or len(value) < 16:
        problems.append(f"{where}.secret: too short or a placeholder; use at least 16 random characters")
        return None
    if auth.scheme == AuthScheme.STANDARD_WEBHOOKS:
        try:
            return Credential(scheme=auth.scheme, value=SecretStr(value), webhook_secret=WebhookSecret.parse(value))
        except ValueError as exc:
            problems.append(f"{where}.secret: {exc}")
            return None
    return Credential(scheme=auth.scheme, value=SecretStr(value))


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def canonical_sources(secrets: Mapping[str, SecretStr]) -> dict[str, Source]:
    """SENTINEL_WEBHOOK_SECRETS keeps working: each entry is a canonical source (bound to a trial by `bind_trial`)."""
    return {
        source_id: Source(
            id=source_id,
            config=SourceConfig(kind=SourceKind.CANONICAL, auth=AuthConfig(secret=secret)),
            credential=Credential(
                scheme=AuthScheme.STANDARD_WEBHOOKS,
                value=secret,
                webhook_secret=WebhookSecret.parse(secret.get_secret_value()),
            ),
        )
        for source_id, secret in secrets.items()
    }


def bind_trial(sources: Mapping[str, Source], trial: str) -> dict[str, Source]:
    """Every source posts for the trial of the protocol safety runs: a source without `trial` is bound to it, and
    a source configured for another trial is refused at start, since safety could process none of its events."""
    problems = [
        f"sources.{source_id}.trial: {source.config.trial!r} is not the trial of the protocol file ({trial!r}); "
        "safety would dead-letter every event of this source"
        for source_id, source in sources.items()
        if source.config.trial not in (None, trial)
    ]
    if problems:
        raise SourcesError(problems)
    return {
        source_id: source.model_copy(update={"config": source.config.model_copy(update={"trial": trial})})
        for source_id, source in sources.items()
    }


def parse_sources(document: Any, env: Mapping[str, str]) -> dict[str, Source]:
    try:
        config = SourcesFile.model_validate(document)
    except ValidationError as exc:
        raise SourcesError([f"{_path(err['loc'])}: {err['msg']}" for err in exc.errors()]) from exc
    return resolve(config, env)


def load_sources(path: Path, env: Mapping[str, str]) -> dict[str, Source]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SourcesError([f"{path}: cannot read: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise SourcesError([f"{path}: not valid YAML: {exc}"]) from exc
    return parse_sources(document, env)


def merge_sources(from_file: Mapping[str, Source], from_env: Mapping[str, Source]) -> dict[str, Source]:
    clash = sorted(set(from_file) & set(from_env))
    if clash:
        raise SourcesError([f"sources.{s}: also defined in SENTINEL_WEBHOOK_SECRETS; define it once" for s in clash])
    return {**from_env, **from_file}


def _path(loc: tuple[int | str, ...]) -> str:
    # pydantic puts the failing model-validator's name or the union tag in loc; keep only real keys
    return ".".join(str(part) for part in loc if not str(part).startswith("function-")) or "(root)"


def check_sources_command(path: Path) -> int:
    """`sentinel sources check FILE`: print each problem with its path; exit 0 when the file is valid."""
    try:
        sources = load_sources(path, os.environ)
    except SourcesError as exc:
        print(f"{path}: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            print(f"  {problem}")
        return 1
    for source_id, source in sorted(sources.items()):
        kind = source.config.kind
        endpoint = f"/v1/sources/{source_id}/{ENDPOINT_FOR_KIND[kind]}"
        print(f"{source_id}: {kind} -> POST {endpoint} ({source.credential.scheme})")
    return 0
