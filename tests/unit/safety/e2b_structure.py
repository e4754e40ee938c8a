"""Our own structural check of an ICH E2B(R3) ICSR message, written from the ICH implementation guide (the
HL7 v3 MCCI_IN200100UV01 batch wrapper, one PORR_IN049016UV message, the ICH OIDs and code lists).

It checks what the guide makes mandatory for a clinical-trial ICSR (conformance "Required"), the ICH OIDs on
each identifier, the value formats (HL7 TS dates, 8-digit MedDRA codes, BL booleans) and that every
causality assessment references a reaction and a drug the message defines. It is not the ICH XSD schema
and does not check the EU / FDA regional rules (see the expedited package's docstring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeET

NS = {"hl7": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
TS = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2})?)?)?)?)?([+-]\d{4})?$")
ICH = "2.16.840.1.113883.3.989.2.1"
ICSR = "hl7:PORR_IN049016UV/hl7:controlActProcess/hl7:subject/hl7:investigationEvent"
ROLE = f"{ICSR}/hl7:component/hl7:adverseEventAssessment/hl7:subject1/hl7:primaryRole"
REACTION = f"{ROLE}/hl7:subjectOf2/hl7:observation?code=29"
DRUG = f"{ROLE}/hl7:subjectOf2/hl7:organizer?code=4/hl7:component/hl7:substanceAdministration"
CAUSALITY = f"{ICSR}/hl7:component/hl7:adverseEventAssessment/hl7:component/hl7:causalityAssessment"


@dataclass(frozen=True)
class Required:
    element: str
    """The ICH element number(s)."""
    path: str
    attribute: str | None = None
    oid: str | None = None
    """The `root` (identifiers) or `codeSystem` (codes) the guide assigns."""
    pattern: re.Pattern[str] | None = None
    null_flavours: frozenset[str] = frozenset()
    """The null flavours the guide accepts in place of a value (none: a value is required)."""


REQUIRED = (
    Required("N.1.1", "hl7:name", "code", f"{ICH}.1.1"),
    Required("N.1.2", "hl7:id", "extension", f"{ICH}.3.22"),
    Required("N.1.3", "hl7:sender/hl7:device/hl7:id", "extension", f"{ICH}.3.13"),
    Required("N.1.4", "hl7:receiver/hl7:device/hl7:id", "extension", f"{ICH}.3.14"),
    Required("N.1.5", "hl7:creationTime", "value", pattern=TS),
    Required("N.2.r.1", "hl7:PORR_IN049016UV/hl7:id", "extension", f"{ICH}.3.1"),
    Required("N.2.r.2", "hl7:PORR_IN049016UV/hl7:sender/hl7:device/hl7:id", "extension", f"{ICH}.3.11"),
    Required("N.2.r.3", "hl7:PORR_IN049016UV/hl7:receiver/hl7:device/hl7:id", "extension", f"{ICH}.3.12"),
    Required("N.2.r.4", "hl7:PORR_IN049016UV/hl7:creationTime", "value", pattern=TS),
    Required("C.1.2", "hl7:PORR_IN049016UV/hl7:controlActProcess/hl7:effectiveTime", "value", pattern=TS),
    Required("C.1.1", f"{ICSR}/hl7:id[@root='{ICH}.3.1']", "extension"),
    Required("C.1.8.1", f"{ICSR}/hl7:id[@root='{ICH}.3.2']", "extension"),
    Required("C.1.4", f"{ICSR}/hl7:effectiveTime/hl7:low", "value", pattern=TS),
    Required("C.1.5", f"{ICSR}/hl7:availabilityTime", "value", pattern=TS),
    Required(
        "C.1.3",
        f"{ICSR}/hl7:subjectOf2/hl7:investigationCharacteristic?code=1/hl7:value",
        "code",
        f"{ICH}.1.2",
    ),
    Required(
        "C.1.6.1",
        f"{ICSR}/hl7:component/hl7:observationEvent?code=1/hl7:value",
        "value",
        pattern=re.compile("^(true|false)$"),
    ),
    Required(
        "C.1.7",
        f"{ICSR}/hl7:component/hl7:observationEvent?code=23/hl7:value",
        "value",
        pattern=re.compile("^(true|false)$"),
    ),
    Required(
        "C.1.8.2",
        f"{ICSR}/hl7:outboundRelationship/hl7:relatedInvestigation?code=1/hl7:subjectOf2/hl7:controlActEvent/hl7:author/hl7:assignedEntity/hl7:code",
        "code",
        f"{ICH}.1.3",
    ),
    Required(
        "C.2.r.4",
        f"{ICSR}/hl7:outboundRelationship/hl7:relatedInvestigation?code=2/hl7:subjectOf2/hl7:controlActEvent/hl7:author/hl7:assignedEntity/hl7:assignedPerson/hl7:asQualifiedEntity/hl7:code",
        "code",
        f"{ICH}.1.6",
    ),
    Required("C.2.r.5", f"{ICSR}/hl7:outboundRelationship/hl7:priorityNumber", "value", pattern=re.compile("^1$")),
    Required(
        "C.3.1",
        f"{ICSR}/hl7:subjectOf1/hl7:controlActEvent/hl7:author/hl7:assignedEntity/hl7:code",
        "code",
        f"{ICH}.1.7",
    ),
    Required(
        "C.3.2",
        f"{ICSR}/hl7:subjectOf1/hl7:controlActEvent/hl7:author/hl7:assignedEntity/hl7:representedOrganization/hl7:assignedEntity/hl7:representedOrganization/hl7:name",
    ),
    Required("C.5.3", f"{ROLE}/hl7:subjectOf1/hl7:researchStudy/hl7:id", "extension", f"{ICH}.3.5"),
    Required("C.5.4", f"{ROLE}/hl7:subjectOf1/hl7:researchStudy/hl7:code", "code", f"{ICH}.1.8"),
    Required("D.1", f"{ROLE}/hl7:player1/hl7:name", null_flavours=frozenset({"MSK", "ASKU", "NASK", "UNK"})),
    Required("D.1.1.4", f"{ROLE}/hl7:player1/hl7:asIdentifiedEntity/hl7:id", "extension", f"{ICH}.3.10"),
    Required("E.i.2.1b", f"{REACTION}/hl7:value", "code", "2.16.840.1.113883.6.163", re.compile(r"^\d{8}$")),
    Required("E.i.2.1a", f"{REACTION}/hl7:value", "codeSystemVersion", pattern=re.compile(r"^\d+\.\d+$")),
    Required("E.i.1.1a", f"{REACTION}/hl7:value/hl7:originalText"),
    Required(
        "E.i.4",
        f"{REACTION}/hl7:effectiveTime/hl7:low",
        "value",
        pattern=TS,
        null_flavours=frozenset({"MSK", "ASKU", "NASK", "UNK"}),
    ),
    Required(
        "E.i.7",
        f"{REACTION}/hl7:outboundRelationship2/hl7:observation?code=27/hl7:value",
        "code",
        f"{ICH}.1.11",
        re.compile("^[0-5]$"),
    ),
    Required("G.k.1", f"{CAUSALITY}?code=20/hl7:value", "code", f"{ICH}.1.13", re.compile("^[1-4]$")),
    Required("G.k.2.2", f"{DRUG}/hl7:consumable/hl7:instanceOfKind/hl7:kindOfProduct/hl7:name"),
    Required("G.k.9.i.2.r.3", f"{CAUSALITY}?code=39/hl7:value"),
    Required("H.1", f"{ICSR}/hl7:text"),
)
SERIOUSNESS_CODES = ("34", "21", "33", "35", "12", "26")  # E.i.3.2a-f
WRAPPER_ORDER = (
    "id",
    "creationTime",
    "responseModeCode",
    "interactionId",
    "name",
    "PORR_IN049016UV",
    "receiver",
    "sender",
)


def select(node: Element, path: str) -> list[Element]:
    """ElementPath with one addition ElementPath lacks: a step `tag?code=X` keeps the children `tag` whose own
    `hl7:code` child has code X (the guide's way of saying which observation or characteristic is which)."""
    current = [node]
    for step in path.split("/"):
        tag, _, code = step.partition("?code=")
        current = [child for parent in current for child in parent.findall(tag, NS)]
        if code:
            current = [c for c in current if any(k.get("code") == code for k in c.findall("hl7:code", NS))]
    return current


def first(node: Element, path: str) -> Element | None:
    found = select(node, path)
    return found[0] if found else None


def parse(xml: bytes) -> Element:
    """Parsed safely (defusedxml), as anything reading a message from outside would."""
    root: Element = SafeET.fromstring(xml)
    return root


def problems(xml: bytes) -> list[str]:
    """Every way the message departs from the guide's structure; empty when it conforms."""
    root = parse(xml)
    found: list[str] = []
    if root.tag != "{urn:hl7-org:v3}MCCI_IN200100UV01":
        return [f"root element is {root.tag}, not MCCI_IN200100UV01 in the HL7 v3 namespace"]
    if root.get("ITSVersion") != "XML_1.0":
        found.append("ITSVersion must be XML_1.0")
    order = [child.tag.split("}")[-1] for child in root if isinstance(child.tag, str)]
    if tuple(order) != WRAPPER_ORDER:
        found.append(f"batch wrapper children {order}, expected {list(WRAPPER_ORDER)}")
    interactions = {e.get("extension") for e in root.iterfind(".//hl7:interactionId", NS)}
    if interactions != {"MCCI_IN200100UV01", "PORR_IN049016UV"}:
        found.append(f"interaction ids {interactions}")
    if root.find("hl7:PORR_IN049016UV/hl7:controlActProcess/hl7:code[@code='PORR_TE049016UV']", NS) is None:
        found.append("HL7 trigger event PORR_TE049016UV missing")
    for rule in REQUIRED:
        node = first(root, rule.path)
        if node is None:
            found.append(f"{rule.element}: missing ({rule.path})")
            continue
        flavour = node.get("nullFlavor")
        if flavour is not None:
            if flavour not in rule.null_flavours:
                found.append(f"{rule.element}: null flavour {flavour} where a value is required")
            continue
        value = node.get(rule.attribute) if rule.attribute else (node.text or "").strip()
        if not value:
            found.append(f"{rule.element}: empty")
            continue
        if rule.oid is not None:
            system = node.get("root") if rule.attribute == "extension" else node.get("codeSystem")
            if system != rule.oid:
                found.append(f"{rule.element}: OID {system}, expected {rule.oid}")
        if rule.pattern is not None and not rule.pattern.fullmatch(value):
            found.append(f"{rule.element}: {value!r} does not match {rule.pattern.pattern}")
    for reaction in select(root, REACTION):
        observations = list(reaction.iterfind("hl7:outboundRelationship2/hl7:observation", NS))
        codes = {code.get("code") for obs in observations for code in obs.iterfind("hl7:code", NS)}
        found += [f"E.i.3.2: seriousness criterion {c} missing" for c in SERIOUSNESS_CODES if c not in codes]
        for obs in observations:
            value = obs.find("hl7:value", NS)
            boolean = value is not None and value.get(XSI_TYPE) == "BL" and value.get("nullFlavor") is None
            if boolean and value is not None and value.get("value") not in ("true", "false"):
                found.append(f"BL value {value.get('value')!r}")
    reactions = {e.get("root") for e in select(root, f"{REACTION}/hl7:id")}
    drugs = {e.get("root") for e in select(root, f"{DRUG}/hl7:id")}
    for assessment in select(root, f"{CAUSALITY}?code=39"):
        ref = assessment.find("hl7:subject1/hl7:adverseEffectReference/hl7:id", NS)
        if ref is None or ref.get("root") not in reactions:
            found.append("G.k.9.i.1: a causality assessment names no reaction of this message")
        drug = assessment.find("hl7:subject2/hl7:productUseReference/hl7:id", NS)
        if drug is None or drug.get("root") not in drugs:
            found.append("G.k.9.i.2.r: a causality assessment names no drug of this message")
        if assessment.find("hl7:author/hl7:assignedEntity/hl7:code/hl7:originalText", NS) is None:
            found.append("G.k.9.i.2.r.1: source of assessment missing")
    return found
