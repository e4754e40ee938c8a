"""Pure: an ICH E2B(R3) ICSR message (HL7 v3 MCCI_IN200100UV01 batch wrapping one PORR_IN049016UV) for a
report case, with the ICH OIDs and each element's number from the ICH implementation guide in a comment.

Built with the standard library's ElementTree (generation only: nothing here parses outside input). What the
data lacks is sent as an HL7 nullFlavor (UNK, NI, MSK) and listed by `gaps()` so the officer sees it before
submission; MedDRA codes come from the CTCAE v5.0 list (MedDRA 20.1) when the site sent none.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from services.safety.expedited.narrative import narrative_for_export
from services.safety.expedited.report_case import ReportCase
from shared.events import deterministic_id

HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ICH = "2.16.840.1.113883.3.989.2.1"
OID = {
    "batch_number": f"{ICH}.3.22",  # N.1.2
    "batch_sender": f"{ICH}.3.13",  # N.1.3
    "batch_receiver": f"{ICH}.3.14",  # N.1.4
    "message_id": f"{ICH}.3.1",  # N.2.r.1 (and C.1.1)
    "message_sender": f"{ICH}.3.11",  # N.2.r.2
    "message_receiver": f"{ICH}.3.12",  # N.2.r.3
    "case_id": f"{ICH}.3.1",  # C.1.1
    "worldwide_case_id": f"{ICH}.3.2",  # C.1.8.1
    "sponsor_study_number": f"{ICH}.3.5",  # C.5.3
    "study_registration": f"{ICH}.3.6",  # C.5.1.r.1
    "investigation_number": f"{ICH}.3.10",  # D.1.1.4
    "messages_in_batch": f"{ICH}.1.1",  # N.1.1 code list
    "report_type": f"{ICH}.1.2",  # C.1.3 code list
    "first_sender": f"{ICH}.1.3",  # C.1.8.2 code list
    "record_source": f"{ICH}.1.4",  # D.1.1.x code list
    "qualification": f"{ICH}.1.6",  # C.2.r.4 code list
    "sender_type": f"{ICH}.1.7",  # C.3.1 code list
    "study_type": f"{ICH}.1.8",  # C.5.4 code list
    "outcome": f"{ICH}.1.11",  # E.i.7 code list
    "drug_role": f"{ICH}.1.13",  # G.k.1 code list
    "observation": f"{ICH}.1.19",  # observation codes
    "organizer": f"{ICH}.1.20",  # organizer categories
    "source_kind": f"{ICH}.1.22",  # C.1.8.2 / C.2.r relatedInvestigation codes
    "characteristic": f"{ICH}.1.23",  # C.1.3 / C.1.9.1 characteristic codes
    "meddra": "2.16.840.1.113883.6.163",
    "country": "1.0.3166.1.2.2",
    "interaction": "2.16.840.1.113883.1.6",
    "trigger": "2.16.840.1.113883.1.18",
    "act_code": "2.16.840.1.113883.5.4",
}
MEDDRA_VERSION = "20.1"
"""CTCAE v5.0 terms are MedDRA 20.1 lowest level terms."""
SERIOUSNESS = (  # E.i.3.2a-f: observation code, our criterion, element number
    ("34", "death", "E.i.3.2a: Results in Death"),
    ("21", "life_threatening", "E.i.3.2b: Life Threatening"),
    ("33", "hospitalization", "E.i.3.2c: Caused / Prolonged Hospitalisation"),
    ("35", "disability", "E.i.3.2d: Disabling / Incapacitating"),
    ("12", "congenital_anomaly", "E.i.3.2e: Congenital Anomaly / Birth Defect"),
    ("26", "medically_important", "E.i.3.2f: Other Medically Important Condition"),
)
OUTCOMES: Mapping[str, str] = {  # E.i.7
    "recovered": "1",
    "resolved": "1",
    "recovering": "2",
    "resolving": "2",
    "not recovered": "3",
    "not resolved": "3",
    "ongoing": "3",
    "recovered with sequelae": "4",
    "resolved with sequelae": "4",
    "fatal": "5",
    "death": "5",
    "died": "5",
    "dead": "5",
    "unknown": "0",
}
RELATEDNESS_TEXT = {
    "not_related": "not related",
    "unlikely": "unlikely related",
    "possible": "possibly related",
    "probable": "probably related",
    "definite": "definitely related",
}


def ts(moment: datetime) -> str:
    """HL7 TS with seconds and UTC offset (C.1.2, C.1.4, C.1.5, N.1.5...)."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def partial_ts(value: str | None) -> str | None:
    """An ISO (partial) date as HL7 TS at its own precision: 2026, 202603 or 20260310."""
    return value.replace("-", "") if value else None


def ucum(unit: str | None) -> str:
    """Our lab units as UCUM: 10^9/L -> 10*9/L; cells/uL -> /uL (E2B PQ units are UCUM)."""
    if not unit:
        return "1"
    return unit.replace("^", "*").replace("cells/", "/").replace(" ", "")


def outcome_code(outcome: str | None, fatal: bool) -> str:
    if fatal:
        return "5"
    return OUTCOMES.get((outcome or "").strip().lower(), "0")


class _Builder:
    def __init__(self) -> None:
        ET.register_namespace("", HL7)
        ET.register_namespace("xsi", XSI)

    @staticmethod
    def el(parent: ET.Element, tag: str, comment: str | None = None, **attrs: str) -> ET.Element:
        if comment:
            parent.append(ET.Comment(f" {comment} "))
        child = ET.SubElement(parent, f"{{{HL7}}}{tag}")
        for name, value in attrs.items():
            key = f"{{{XSI}}}type" if name == "xsi_type" else name
            child.set(key, value)
        return child

    def text(self, parent: ET.Element, tag: str, value: str | None, comment: str | None = None, **attrs: str) -> None:
        if value is None:
            self.el(parent, tag, comment, nullFlavor="UNK", **attrs)
        else:
            self.el(parent, tag, comment, **attrs).text = value

    def observation(
        self, parent: ET.Element, code: str, comment: str, value: Mapping[str, str], text: str | None = None
    ) -> None:
        rel = self.el(parent, "outboundRelationship2", comment, typeCode="PERT")
        obs = self.el(rel, "observation", classCode="OBS", moodCode="EVN")
        self.el(obs, "code", code=code, codeSystem=OID["observation"], codeSystemVersion="2.0")
        node = self.el(obs, "value", **value)
        if text is not None:
            node.text = text


def gaps(case: ReportCase) -> list[str]:
    """What the message sends as a null flavour (or leaves out) because the data does not have it."""
    missing = [
        "D.1: patient initials (UNK; the subject id is sent as D.1.1.4 investigation number)",
        "D.2 / D.5: age, date of birth and sex (not collected)",
        "C.2.r.1 / C.2.r.2: reporter name and address (MSK; the site id is sent as the organisation)",
        "G.k.8: action taken with the drug (not collected)",
    ]
    if case.meddra_code is None:
        missing.append(f"E.i.2.1b: no MedDRA code for '{case.term}': the message is not valid for submission")
    if case.country is None:
        missing.append("E.i.9 / C.2.r.3: country not set in the protocol's expedited_reporting.country")
    if not case.doses:
        missing.append("G.k.4.r: no infusion recorded")
    if case.outcome is None and not case.fatal:
        missing.append("E.i.7: outcome not reported (sent as 0 = unknown)")
    return missing


def render_e2b(case: ReportCase, *, created: datetime, receiver: str) -> bytes:
    b = _Builder()
    root = ET.Element(f"{{{HL7}}}MCCI_IN200100UV01", {"ITSVersion": "XML_1.0"})
    message_id = f"{case.case_id}-v{case.report_version}"
    b.el(root, "id", "N.1.2: Batch Number", extension=f"{message_id}-{ts(created)[:14]}", root=OID["batch_number"])
    b.el(root, "creationTime", "N.1.5: Date of Batch Transmission", value=ts(created))
    b.el(root, "responseModeCode", code="D")
    b.el(root, "interactionId", extension="MCCI_IN200100UV01", root=OID["interaction"])
    b.el(
        root,
        "name",
        "N.1.1: Type of Messages in Batch",
        code="1",
        codeSystem=OID["messages_in_batch"],
        codeSystemVersion="2.0",
    )
    message = b.el(root, "PORR_IN049016UV", "N.2.r: ICH ICSR message header")
    b.el(message, "id", "N.2.r.1: Message Identifier", extension=message_id, root=OID["message_id"])
    b.el(message, "creationTime", "N.2.r.4: Date of Message Creation", value=ts(created))
    b.el(message, "interactionId", extension="PORR_IN049016UV", root=OID["interaction"])
    b.el(message, "processingCode", code="P")
    b.el(message, "processingModeCode", code="T")
    b.el(message, "acceptAckCode", code="AL")
    device = b.el(b.el(message, "receiver", typeCode="RCV"), "device", classCode="DEV", determinerCode="INSTANCE")
    b.el(device, "id", "N.2.r.3: Message Receiver Identifier", extension=receiver, root=OID["message_receiver"])
    device = b.el(b.el(message, "sender", typeCode="SND"), "device", classCode="DEV", determinerCode="INSTANCE")
    b.el(
        device,
        "id",
        "N.2.r.2: Message Sender Identifier",
        extension=case.sender_organisation,
        root=OID["message_sender"],
    )
    act = b.el(message, "controlActProcess", classCode="CACT", moodCode="EVN")
    b.el(act, "code", code="PORR_TE049016UV", codeSystem=OID["trigger"])
    b.el(act, "effectiveTime", "C.1.2: Date of Creation", value=ts(created))
    event = b.el(b.el(act, "subject", typeCode="SUBJ"), "investigationEvent", classCode="INVSTG", moodCode="EVN")
    _case_header(b, event, case)
    assessment = b.el(
        b.el(event, "component", typeCode="COMP"), "adverseEventAssessment", classCode="INVSTG", moodCode="EVN"
    )
    reaction_id = deterministic_id("e2b-reaction", case.case_id)
    drug_id = deterministic_id("e2b-drug", case.case_id)
    role = b.el(b.el(assessment, "subject1", typeCode="SBJ"), "primaryRole", classCode="INVSBJ")
    _patient(b, role, case)
    _reaction(b, role, case, reaction_id)
    _labs(b, role, case)
    _drug(b, role, case, drug_id)
    _causality(b, assessment, case, reaction_id=reaction_id, drug_id=drug_id)
    _case_footer(b, event, case)
    device = b.el(b.el(root, "receiver", typeCode="RCV"), "device", classCode="DEV", determinerCode="INSTANCE")
    b.el(device, "id", "N.1.4: Batch Receiver Identifier", extension=receiver, root=OID["batch_receiver"])
    device = b.el(b.el(root, "sender", typeCode="SND"), "device", classCode="DEV", determinerCode="INSTANCE")
    b.el(device, "id", "N.1.3: Batch Sender Identifier", extension=case.sender_organisation, root=OID["batch_sender"])
    ET.indent(root)
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _case_header(b: _Builder, event: ET.Element, case: ReportCase) -> None:
    b.el(
        event,
        "id",
        "C.1.1: Sender's (case) Safety Report Unique Identifier",
        extension=_safety_report_id(case),
        root=OID["case_id"],
    )
    b.el(
        event,
        "id",
        "C.1.8.1: Worldwide Unique Case Identification Number",
        extension=_safety_report_id(case),
        root=OID["worldwide_case_id"],
    )
    b.el(event, "code", code="PAT_ADV_EVNT", codeSystem=OID["act_code"])
    b.text(
        event,
        "text",
        narrative_for_export(case),
        "H.1: Case Narrative Including Clinical Course, Therapeutic Measures, Outcome and Additional Relevant "
        "Information",
    )
    b.el(event, "statusCode", code="active")
    span = b.el(event, "effectiveTime")
    b.el(span, "low", "C.1.4: Date Report Was First Received from Source", value=ts(case.first_received_at))
    b.el(
        event,
        "availabilityTime",
        "C.1.5: Date of Most Recent Information for This Report",
        value=ts(case.latest_received_at),
    )


def _safety_report_id(case: ReportCase) -> str:
    """C.1.1 / C.1.8.1: country code - sender - case number, the ICH pattern."""
    return f"{case.country or 'XX'}-{case.sender_organisation.replace(' ', '')[:40]}-{case.case_id}"


def _patient(b: _Builder, role: ET.Element, case: ReportCase) -> None:
    person = b.el(role, "player1", classCode="PSN", determinerCode="INSTANCE")
    b.el(person, "name", "D.1: Patient (name or initials): not collected", nullFlavor="UNK")
    if case.fatal and case.end:
        b.el(
            person,
            "deceasedTime",
            "D.9.1: Date of Death (the fatal event's end date)",
            value=partial_ts(case.end) or "",
        )
    ident = b.el(
        person, "asIdentifiedEntity", "D.1.1.4: Patient Medical Record Number (Investigation Number)", classCode="IDENT"
    )
    b.el(ident, "id", extension=case.subject_id, root=OID["investigation_number"])
    b.el(ident, "code", code="4", codeSystem=OID["record_source"], codeSystemVersion="2.0", displayName="Investigation")
    study = b.el(
        b.el(role, "subjectOf1", "C.5: Study Identification", typeCode="SBJ"),
        "researchStudy",
        classCode="CLNTRL",
        moodCode="EVN",
    )
    b.el(study, "id", "C.5.3: Sponsor Study Number", extension=case.trial_id, root=OID["sponsor_study_number"])
    b.el(
        study,
        "code",
        "C.5.4: Study Type Where Reaction(s) / Event(s) Were Observed (1 = clinical trials)",
        code="1",
        codeSystem=OID["study_type"],
        codeSystemVersion="2.0",
    )
    b.text(study, "title", case.trial_title, "C.5.2: Study Name")
    registration = b.el(
        b.el(study, "authorization", typeCode="AUTH"), "studyRegistration", classCode="ACT", moodCode="EVN"
    )
    b.el(
        registration,
        "id",
        "C.5.1.r.1: Study Registration Number",
        extension=case.trial_id,
        root=OID["study_registration"],
    )


def _reaction(b: _Builder, role: ET.Element, case: ReportCase, reaction_id: str) -> None:
    obs = b.el(
        b.el(role, "subjectOf2", "E.i: Reaction(s) / Event(s)", typeCode="SBJ"),
        "observation",
        classCode="OBS",
        moodCode="EVN",
    )
    b.el(obs, "id", root=reaction_id)
    b.el(obs, "code", code="29", codeSystem=OID["observation"], codeSystemVersion="2.0", displayName="reaction")
    span = b.el(obs, "effectiveTime", xsi_type="IVL_TS")
    onset, end = partial_ts(case.onset), partial_ts(case.end)
    b.el(
        span,
        "low",
        "E.i.4: Date of Start of Reaction / Event",
        **({"value": onset} if onset else {"nullFlavor": "UNK"}),
    )
    if end:
        b.el(span, "high", "E.i.5: Date of End of Reaction / Event", value=end)
    coded = {"codeSystem": OID["meddra"], "codeSystemVersion": MEDDRA_VERSION}
    coded.update({"code": case.meddra_code} if case.meddra_code else {"nullFlavor": "NI"})
    value = b.el(
        obs,
        "value",
        "E.i.2.1a: MedDRA Version; E.i.2.1b: Reaction / Event (MedDRA code); E.i.1.1a: as reported",
        xsi_type="CE",
        **coded,
    )
    b.el(value, "originalText", language="en").text = case.reported_term
    if case.country:
        place = b.el(
            b.el(
                b.el(obs, "location", "E.i.9: Country Where the Reaction / Event Occurred", typeCode="LOC"),
                "locatedEntity",
                classCode="LOCE",
            ),
            "locatedPlace",
            classCode="COUNTRY",
            determinerCode="INSTANCE",
        )
        b.el(place, "code", code=case.country, codeSystem=OID["country"])
    for code, criterion, comment in SERIOUSNESS:
        ticked = criterion in case.criteria
        b.observation(
            obs,
            code,
            comment,
            {"xsi_type": "BL", "value": "true"} if ticked else {"xsi_type": "BL", "nullFlavor": "NI"},
        )
    b.observation(
        obs,
        "27",
        "E.i.7: Outcome of Reaction / Event at the Time of Last Observation",
        {
            "xsi_type": "CE",
            "code": outcome_code(case.outcome, case.fatal),
            "codeSystem": OID["outcome"],
            "codeSystemVersion": "2.0",
        },
    )
    b.observation(
        obs, "24", "E.i.8: Medical Confirmation by Healthcare Professional", {"xsi_type": "BL", "value": "true"}
    )


def _labs(b: _Builder, role: ET.Element, case: ReportCase) -> None:
    if not case.labs:
        return
    organizer = b.el(
        b.el(role, "subjectOf2", "F.r: Results of Tests and Procedures", typeCode="SBJ"),
        "organizer",
        classCode="CATEGORY",
        moodCode="EVN",
    )
    b.el(
        organizer,
        "code",
        code="3",
        codeSystem=OID["organizer"],
        codeSystemVersion="2.0",
        displayName="testsAndProceduresRelevantToTheInvestigation",
    )
    for lab in case.labs:
        obs = b.el(b.el(organizer, "component", typeCode="COMP"), "observation", classCode="OBS", moodCode="EVN")
        code = b.el(obs, "code", "F.r.2.1: Test Name", nullFlavor="NI")
        b.el(code, "originalText").text = lab.test
        b.el(obs, "effectiveTime", "F.r.1: Test Date", value=ts(lab.collected_at))
        number = _decimal(lab.value)
        if number is not None:
            b.el(
                obs,
                "value",
                "F.r.3.2: Test Result (value); F.r.3.3: Test Result (unit)",
                xsi_type="PQ",
                value=str(number),
                unit=ucum(lab.unit),
            )
        else:
            b.el(
                obs, "value", "F.r.3.4: Result Unstructured Data", xsi_type="ED"
            ).text = f"{lab.value} {lab.unit or ''}".strip()
        for limit, comment, value in (
            ("low", "F.r.4: Normal Low Value", lab.lln),
            ("high", "F.r.5: Normal High Value", lab.uln),
        ):
            if value is None:
                continue
            rng = b.el(
                b.el(obs, "referenceRange", typeCode="REFV"), "observationRange", classCode="OBS", moodCode="EVN.CRT"
            )
            b.el(rng, "value", comment, xsi_type="PQ", value=value, unit=ucum(lab.unit))
            b.el(rng, "interpretationCode", code="L" if limit == "low" else "H", codeSystem="2.16.840.1.113883.5.83")


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _drug(b: _Builder, role: ET.Element, case: ReportCase, drug_id: str) -> None:
    organizer = b.el(
        b.el(role, "subjectOf2", "G.k: Drug(s) Information", typeCode="SBJ"),
        "organizer",
        classCode="CATEGORY",
        moodCode="EVN",
    )
    b.el(
        organizer, "code", code="4", codeSystem=OID["organizer"], codeSystemVersion="2.0", displayName="drugInformation"
    )
    admin = b.el(
        b.el(organizer, "component", typeCode="COMP"), "substanceAdministration", classCode="SBADM", moodCode="EVN"
    )
    b.el(admin, "id", root=drug_id)
    product = b.el(
        b.el(b.el(admin, "consumable", typeCode="CSM"), "instanceOfKind", classCode="INST"),
        "kindOfProduct",
        classCode="MMAT",
        determinerCode="KIND",
    )
    b.el(product, "name", "G.k.2.2: Medicinal Product Name as Reported by the Primary Source").text = case.product
    for dose in case.doses:
        rel = b.el(
            admin,
            "outboundRelationship2",
            f"G.k.4.r: Dosage and Relevant Information (infusion {dose.number})",
            typeCode="COMP",
        )
        given = b.el(rel, "substanceAdministration", classCode="SBADM", moodCode="EVN")
        cells = dose.cells_per_kg or case.arm_cells_per_kg
        b.el(given, "text", "G.k.4.r.8: Dosage Text").text = f"infusion {dose.number}" + (
            f", {cells} cells/kg" if cells else ""
        )
        span = b.el(given, "effectiveTime", xsi_type="IVL_TS")
        b.el(span, "low", "G.k.4.r.4: Date and Time of Start of Drug", value=ts(dose.administered_at))
        b.el(span, "high", "G.k.4.r.5: Date and Time of Last Administration", value=ts(dose.administered_at))
        if case.route:
            route = b.el(given, "routeCode", "G.k.4.r.10.1: Route of Administration (free text)")
            b.el(route, "originalText").text = case.route
        if cells:
            b.el(
                given,
                "doseQuantity",
                "G.k.4.r.1a: Dose (number); G.k.4.r.1b: Dose (unit)",
                value=cells,
                unit="{cells}/kg",
            )
    if case.indication:
        obs = b.el(
            b.el(admin, "inboundRelationship", "G.k.7.r: Indication for Use in Case", typeCode="RSON"),
            "observation",
            classCode="OBS",
            moodCode="EVN",
        )
        b.el(obs, "code", code="19", codeSystem=OID["observation"], codeSystemVersion="2.0", displayName="indication")
        value = b.el(
            obs,
            "value",
            "G.k.7.r.1: Indication as Reported by the Primary Source",
            xsi_type="CE",
            codeSystem=OID["meddra"],
            nullFlavor="NI",
        )
        b.el(value, "originalText").text = case.indication


def _causality(b: _Builder, assessment: ET.Element, case: ReportCase, *, reaction_id: str, drug_id: str) -> None:
    char = b.el(
        b.el(assessment, "component", "G.k.1: Characterisation of Drug Role (1 = suspect)", typeCode="COMP"),
        "causalityAssessment",
        classCode="OBS",
        moodCode="EVN",
    )
    b.el(char, "code", code="20", codeSystem=OID["observation"], codeSystemVersion="2.0")
    b.el(char, "value", xsi_type="CE", code="1", codeSystem=OID["drug_role"], codeSystemVersion="2.0")
    b.el(b.el(char, "subject2", typeCode="SUBJ"), "productUseReference", classCode="SBADM", moodCode="EVN").append(
        _id(drug_id)
    )
    assessments = [("Investigator", RELATEDNESS_TEXT.get(case.site_relatedness or "", "not reported"))]
    if case.sponsor_causality:
        assessments.append(("Sponsor", case.sponsor_causality.replace("_", " ")))
    for source, result in assessments:
        node = b.el(
            b.el(
                assessment, "component", "G.k.9.i.2.r: Relatedness of Drug to Reaction(s) / Event(s)", typeCode="COMP"
            ),
            "causalityAssessment",
            classCode="OBS",
            moodCode="EVN",
        )
        b.el(node, "code", code="39", codeSystem=OID["observation"], codeSystemVersion="2.0")
        b.el(node, "value", "G.k.9.i.2.r.3: Result of Assessment", xsi_type="ST").text = result
        method = b.el(node, "methodCode", "G.k.9.i.2.r.2: Method of Assessment")
        b.el(method, "originalText").text = "Global introspection"
        code = b.el(
            b.el(b.el(node, "author", typeCode="AUT"), "assignedEntity", classCode="ASSIGNED"),
            "code",
            "G.k.9.i.2.r.1: Source of Assessment",
        )
        b.el(code, "originalText").text = source
        b.el(
            b.el(node, "subject1", "G.k.9.i.1: Reaction(s) / Event(s) Assessed", typeCode="SUBJ"),
            "adverseEffectReference",
            classCode="OBS",
            moodCode="EVN",
        ).append(_id(reaction_id))
        b.el(b.el(node, "subject2", typeCode="SUBJ"), "productUseReference", classCode="SBADM", moodCode="EVN").append(
            _id(drug_id)
        )


def _id(root: str) -> ET.Element:
    node = ET.Element(f"{{{HL7}}}id")
    node.set("root", root)
    return node


def _case_footer(b: _Builder, event: ET.Element, case: ReportCase) -> None:
    docs = b.el(
        b.el(event, "component", "C.1.6.1: Are Additional Documents Available?", typeCode="COMP"),
        "observationEvent",
        classCode="OBS",
        moodCode="EVN",
    )
    b.el(docs, "code", code="1", codeSystem=OID["observation"], codeSystemVersion="2.0")
    b.el(docs, "value", xsi_type="BL", value="false")
    expedited = b.el(
        b.el(
            event,
            "component",
            "C.1.7: Does This Case Fulfil the Local Criteria for an Expedited Report?",
            typeCode="COMP",
        ),
        "observationEvent",
        classCode="OBS",
        moodCode="EVN",
    )
    b.el(expedited, "code", code="23", codeSystem=OID["observation"], codeSystemVersion="2.0")
    b.el(expedited, "value", xsi_type="BL", value="true" if case.susar else "false")
    first = b.el(
        b.el(event, "outboundRelationship", "C.1.8.2: First Sender of This Case (2 = other)", typeCode="SPRT"),
        "relatedInvestigation",
        classCode="INVSTG",
        moodCode="EVN",
    )
    b.el(first, "code", code="1", codeSystem=OID["source_kind"], codeSystemVersion="2.0")
    author = b.el(
        b.el(b.el(first, "subjectOf2", typeCode="SUBJ"), "controlActEvent", classCode="CACT", moodCode="EVN"),
        "author",
        typeCode="AUT",
    )
    b.el(
        b.el(author, "assignedEntity", classCode="ASSIGNED"),
        "code",
        code="2",
        codeSystem=OID["first_sender"],
        codeSystemVersion="2.0",
    )
    source = b.el(
        event,
        "outboundRelationship",
        "C.2.r: Primary Source(s) of Information (the investigator at the site)",
        typeCode="SPRT",
    )
    b.el(source, "priorityNumber", "C.2.r.5: Primary Source for Regulatory Purposes", value="1")
    related = b.el(source, "relatedInvestigation", classCode="INVSTG", moodCode="EVN")
    b.el(related, "code", code="2", codeSystem=OID["source_kind"], codeSystemVersion="2.0")
    author = b.el(
        b.el(b.el(related, "subjectOf2", typeCode="SUBJ"), "controlActEvent", classCode="CACT", moodCode="EVN"),
        "author",
        typeCode="AUT",
    )
    entity = b.el(author, "assignedEntity", classCode="ASSIGNED")
    person = b.el(entity, "assignedPerson", classCode="PSN", determinerCode="INSTANCE")
    name = b.el(person, "name")
    b.el(name, "given", "C.2.r.1.2: Reporter's Given Name", nullFlavor="MSK")
    b.el(name, "family", "C.2.r.1.4: Reporter's Family Name", nullFlavor="MSK")
    qualified = b.el(person, "asQualifiedEntity", "C.2.r.4: Qualification (1 = physician)", classCode="QUAL")
    b.el(qualified, "code", code="1", codeSystem=OID["qualification"], codeSystemVersion="2.0")
    if case.country:
        located = b.el(person, "asLocatedEntity", "C.2.r.3: Reporter's Country Code", classCode="LOCE")
        b.el(
            b.el(located, "location", classCode="COUNTRY", determinerCode="INSTANCE"),
            "code",
            code=case.country,
            codeSystem=OID["country"],
        )
    org = b.el(entity, "representedOrganization", classCode="ORG", determinerCode="INSTANCE")
    b.el(org, "name", "C.2.r.2.1: Reporter's Organisation (the site)").text = f"site {case.site_id}"
    sender = b.el(
        b.el(
            b.el(event, "subjectOf1", "C.3: Information on Sender of Case Safety Report", typeCode="SUBJ"),
            "controlActEvent",
            classCode="CACT",
            moodCode="EVN",
        ),
        "author",
        typeCode="AUT",
    )
    entity = b.el(sender, "assignedEntity", classCode="ASSIGNED")
    b.el(
        entity,
        "code",
        "C.3.1: Sender Type (1 = pharmaceutical company / sponsor)",
        code="1",
        codeSystem=OID["sender_type"],
        codeSystemVersion="2.0",
    )
    org = b.el(
        b.el(
            b.el(entity, "representedOrganization", classCode="ORG", determinerCode="INSTANCE"),
            "assignedEntity",
            classCode="ASSIGNED",
        ),
        "representedOrganization",
        classCode="ORG",
        determinerCode="INSTANCE",
    )
    b.el(org, "name", "C.3.2: Sender's Organisation").text = case.sender_organisation
    kind = b.el(
        b.el(event, "subjectOf2", "C.1.3: Type of Report (2 = report from study)", typeCode="SUBJ"),
        "investigationCharacteristic",
        classCode="OBS",
        moodCode="EVN",
    )
    b.el(kind, "code", code="1", codeSystem=OID["characteristic"], codeSystemVersion="2.0")
    b.el(kind, "value", xsi_type="CE", code="2", codeSystem=OID["report_type"], codeSystemVersion="2.0")
    other = b.el(
        b.el(event, "subjectOf2", "C.1.9.1: Other Case Identifiers in Previous Transmissions", typeCode="SUBJ"),
        "investigationCharacteristic",
        classCode="OBS",
        moodCode="EVN",
    )
    b.el(other, "code", code="2", codeSystem=OID["characteristic"], codeSystemVersion="2.0")
    b.el(other, "value", xsi_type="BL", value="false")
