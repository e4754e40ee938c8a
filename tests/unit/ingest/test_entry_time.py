"""An AE version's envelope `time` is when the site entered it, where the EDC's own audit says (FHIR meta.lastUpdated,
ODM AuditRecord/DateTimeStamp), else the site's awareness, else our receipt (`normalise.clinical_time`). Safety tells a
version the EDC delivered late (a retried webhook) from one the site sent after retracting the AE by it.

Per adapter: FHIR AdverseEvent -> meta.lastUpdated (with a zone); ODM (OpenClinica, Rave datasets) -> the latest
AuditRecord/DateTimeStamp of the AE's item group; canonical JSON, REDCap and SDTM carry no entry time (awareness or
receipt, as before)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.ingest.adapters.fhir import parse_fhir
from services.ingest.adapters.odm import parse_odm
from services.ingest.normalise import to_envelope
from services.safety.sae import site_entry_time
from shared.events import AeData, AeReported, RecordStatusData
from tests.unit.ingest.conftest import fixture_bytes, load_fixture_sources
from tests.unit.ingest.test_fhir import SOURCE

RECEIVED = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)


def fhir_ae(**meta: str) -> AeReported:
    resource = json.loads(fixture_bytes("fhir/ae_backport_serious.json"))
    resource["meta"] |= meta
    [record] = parse_fhir(json.dumps(resource).encode(), source=SOURCE).records
    envelope = to_envelope("fhir", record.event, RECEIVED)
    assert isinstance(envelope, AeReported)
    return envelope


def test_a_fhir_ae_is_timed_at_its_last_update_and_safety_reads_it_as_the_entry_time() -> None:
    envelope = fhir_ae(lastUpdated="2026-03-04T10:15:00+01:00")
    assert envelope.time == datetime(2026, 3, 4, 9, 15, tzinfo=UTC)
    assert site_entry_time(envelope) == datetime(2026, 3, 4, 9, 15, tzinfo=UTC)


def test_a_fhir_ae_without_last_update_or_zone_is_timed_at_the_awareness_which_is_no_entry_time() -> None:
    for envelope in (fhir_ae(), fhir_ae(lastUpdated="2026-03-04T10:15:00")):
        assert envelope.time == envelope.data.awareness_at
        assert site_entry_time(envelope) is None


def test_an_odm_ae_is_timed_at_its_audit_stamp() -> None:
    source = load_fixture_sources("odm/sources.yaml")["rave"].config
    outcome = parse_odm(fixture_bytes("odm/rave_dataset.xml"), source=source)
    audited, unaudited = [r.event for r in outcome.records if isinstance(r.event.data, AeData)]
    assert audited.entered_at == datetime(2026, 3, 4, 8, 0, tzinfo=UTC)  # the AuditRecord's DateTimeStamp
    assert unaudited.entered_at is None
    envelope = to_envelope("rave", audited, RECEIVED)
    assert isinstance(envelope, AeReported)
    assert envelope.time == site_entry_time(envelope) == datetime(2026, 3, 4, 8, 0, tzinfo=UTC)
    assert to_envelope("rave", unaudited, RECEIVED).time == RECEIVED  # no awareness either: our receipt


def test_a_fhir_entered_in_error_is_dated_at_its_last_update_the_sites_change() -> None:
    resource = json.loads(fixture_bytes("fhir/ae_backport_serious.json"))
    resource["meta"]["lastUpdated"] = "2026-03-04T11:00:00Z"
    resource["modifierExtension"][0]["valueCode"] = "entered-in-error"
    [record] = parse_fhir(json.dumps(resource).encode(), source=SOURCE).records
    assert record.event.data.changed_at == datetime(2026, 3, 4, 11, 0, tzinfo=UTC)  # type: ignore[attr-defined]


def test_an_odm_removal_is_dated_at_its_audit_stamp() -> None:
    """Rave's AE log line 1 removed (TransactionType="Remove"), its AuditRecord stamped 08:00: the site's change."""
    source = load_fixture_sources("odm/sources.yaml")["rave"].config
    body = fixture_bytes("odm/rave_dataset.xml").replace(
        b'ItemGroupRepeatKey="1" mdsol:RecordId="8408"',
        b'ItemGroupRepeatKey="1" mdsol:RecordId="8408" TransactionType="Remove"',
    )
    outcome = parse_odm(body, source=source)
    [removed] = [r.event.data for r in outcome.records if isinstance(r.event.data, RecordStatusData)]
    assert (removed.status, removed.changed_at) == ("deleted", datetime(2026, 3, 4, 8, 0, tzinfo=UTC))


# --- the site's own link from a retracted AE to its re-entry --------------------------------------------------------


def test_canonical_json_carries_the_sites_replaced_by() -> None:
    from services.ingest.normalise import parse_body

    document = {
        "id": "status-1",
        "type": "status",
        "study": "NCT07212335",
        "site": "SITE-1",
        "subject": "S-001",
        "data": {"record_type": "ae", "record_id": "AE-1", "status": "entered_in_error", "replaced_by": "AE-2"},
    }
    [parsed] = parse_body(json.dumps(document).encode())
    assert isinstance(parsed.data, RecordStatusData) and parsed.data.replaced_by == "AE-2"


def test_an_odm_form_item_mapped_to_replaced_by_links_the_removed_ae_to_its_re_entry() -> None:
    """A sponsor's AE form with a 're-entered as' item (AE.AEREPL here), mapped in the sources file: a removed line
    names the AE id its event was re-entered under; on a live line the item means nothing."""
    from services.ingest.sources import FieldMap

    source = load_fixture_sources("odm/sources.yaml")["rave"].config
    form = source.mapping.forms["AE"]
    mapped = FieldMap.model_validate(form.model_dump() | {"items": form.items | {"AE.AEREPL": "replaced_by"}})
    source = source.model_copy(
        update={"mapping": source.mapping.model_copy(update={"forms": {**source.mapping.forms, "AE": mapped}})}
    )
    body = fixture_bytes("odm/rave_dataset.xml").replace(
        b'<ItemData ItemOID="AE.AETERM" Value="Neurotoxicity"/>',
        b'<ItemData ItemOID="AE.AETERM" Value="Neurotoxicity"/><ItemData ItemOID="AE.AEREPL" Value="8410"/>',
    )
    live = parse_odm(body, source=source)
    assert "Neurotoxicity" in {r.event.data.term for r in live.records if isinstance(r.event.data, AeData)}
    assert not [r for r in live.records if isinstance(r.event.data, RecordStatusData)]
    removed = body.replace(b'mdsol:RecordId="8408"', b'mdsol:RecordId="8408" TransactionType="Remove"')
    [status] = [
        r.event.data for r in parse_odm(removed, source=source).records if isinstance(r.event.data, RecordStatusData)
    ]
    assert (status.status, status.replaced_by) == ("deleted", "8410")
