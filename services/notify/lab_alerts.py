"""Pure: a lab toxicity signal becomes an alert (no reporting clock) threaded per subject and term."""

from __future__ import annotations

from services.notify.mail_content import lab_mail
from services.notify.sae_alerts import AlertPlan, plan_messages
from shared.events import LabToxicity, deterministic_id
from shared.protocol import Protocol

LAB_KIND = "lab_toxicity"


def lab_thread_key(signal: LabToxicity) -> str:
    return f"{LAB_KIND}:{signal.trialid}:{signal.data.subject_id}:{signal.data.term}"


def plan_lab_alert(signal: LabToxicity, protocol: Protocol) -> AlertPlan:
    data = signal.data
    thread_key = lab_thread_key(signal)
    content = lab_mail(signal.trialid, data)
    return AlertPlan(
        alert_id=deterministic_id("alert", thread_key),
        thread_key=thread_key,
        title=f"{data.term} grade {data.grade} (subject {data.subject_id}, site {data.site_id})",
        details=data.model_dump(mode="json"),
        obligation=None,
        messages=plan_messages(signal.id, protocol, list(protocol.lab_alerts.notify_roles), content),
    )
