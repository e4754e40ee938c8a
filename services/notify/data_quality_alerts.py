"""Pure: a data-quality finding becomes an informational alert for the site's contact, sent once, no clock.

Who hears of it: `data_quality.notify_roles` (default: the lab alert roles) plus `data_quality.code_roles`
for its code; a contact listing `sites` only for findings from those sites. If that leaves nobody (a site
without its own contact), the lab alert roles hear of it: a finding is never addressed to no one.
One alert per record and finding; the same finding again only adds history, a changed one re-notifies.
A finding about the data under an officer's DLT decision also goes to the DLT's roles (`dlt.notify_roles`, the
people who decide and revise it), whatever the protocol's data-quality routing says: it asks them to review a
decision, not the site to correct a record. A death recorded with no fatal AE on record goes to the SAE roles
(`sae.notify_roles`) too: no SAE clock or grade 5 DLT can start until the site reports the AE, so the officers
chase it; so does an SAE the site took back naming a replacement that is not serious (its report is no longer
tracked).
"""

from __future__ import annotations

from services.notify.escalation import Recipient
from services.notify.mail_content import MailContent, notice_mail
from services.notify.notice_alerts import notice_plan, site_recipients
from services.notify.sae_alerts import AlertPlan, messages_to
from shared.events import DataQualityData, DataQualityFlagged
from shared.protocol import Protocol

DATA_QUALITY_KIND = "data_quality"
LABELS = {
    "unknown_unit": "Unknown unit",
    "implausible_value": "Implausible value",
    "ambiguous_value": "Ambiguous number",
    "unmapped_term": "AE term maps to no CTCAE term",
    "inconsistent_seriousness": "Inconsistent seriousness",
    "version_of_retracted_ae": "New version of an AE the site retracted",
    "confirmed_dlt_ae_retracted": "AE behind a CONFIRMED DLT retracted by the site",
    "decided_dlt_data_changed": "Data under a DLT decision changed",
    "sae_clock_from_withdrawn_ae": "SAE re-entered under a new AE id: its clock is the first record's",
    "sae_replaced_by_non_serious": "SAE taken back and replaced by an AE not reported serious",
}
DLT_DECISION_CODES = frozenset({"confirmed_dlt_ae_retracted", "decided_dlt_data_changed"})
"""Findings about the data an officer's DLT decision rests on (safety's retracted_dlt, dlt_decision_basis)."""
SAE_ROLE_CODES = frozenset({"death_without_fatal_ae", "sae_replaced_by_non_serious"})
"""Findings the SAE roles hear of whatever the protocol's data-quality routing says: a death with no fatal AE, an SAE
whose replacement is not serious (no SAE report is tracked for either)."""


def finding_label(code: str) -> str:
    return LABELS.get(code, code.replace("_", " ").capitalize())


def data_quality_thread_key(signal: DataQualityFlagged) -> str:
    data = signal.data
    return f"{DATA_QUALITY_KIND}:{signal.trialid}:{data.subject_id}:{data.record_type}:{data.record_id}:{data.code}"


def recipients(protocol: Protocol, data: DataQualityData) -> tuple[Recipient, ...]:
    rules = protocol.data_quality
    roles = [*(rules.notify_roles or protocol.lab_alerts.notify_roles), *rules.code_roles.get(data.code, [])]
    if data.code in DLT_DECISION_CODES:
        roles += protocol.dlt.notify_roles
    if data.code in SAE_ROLE_CODES:
        roles += protocol.sae.notify_roles
    return site_recipients(protocol, roles, data.site_id, fallback_roles=protocol.lab_alerts.notify_roles)


def data_quality_mail(trial_id: str, data: DataQualityData) -> MailContent:
    label = finding_label(data.code)
    decision = data.code in DLT_DECISION_CODES
    return notice_mail(
        subject=f"[{trial_id}] Data quality: {label} ({data.record_type} {data.record_id}), subject {data.subject_id}",
        heading=(
            f"{label}: the data a DLT decision rests on changed."
            if decision
            else f"{label}: a record the safety rules could not use as given."
        ),
        rows=[
            ("Trial", trial_id),
            ("Site", data.site_id),
            ("Subject", data.subject_id),
            ("Record", f"{data.record_type} {data.record_id}"),
            ("Finding", f"{label} ({data.code})"),
            ("Detail", data.detail),
        ],
        footer=(
            "The decision stands until an officer revises it; the detail says what changed and how to revise it."
            if decision
            else "Please correct the record in the EDC; the corrected record is checked again when it arrives."
        ),
    )


def plan_data_quality(signal: DataQualityFlagged, protocol: Protocol) -> AlertPlan:
    data = signal.data
    thread_key = data_quality_thread_key(signal)
    where = f"(subject {data.subject_id}, site {data.site_id})"
    title = f"{finding_label(data.code)}: {data.record_type} {data.record_id} {where}"
    return notice_plan(
        thread_key=thread_key,
        title=title,
        data=data,
        messages=messages_to(signal.id, recipients(protocol, data), data_quality_mail(signal.trialid, data)),
    )
