"""FHIR R4 export: one Observation per session, questionnaire totals as `survey` Observations, in a
transaction Bundle with conditional creates, and optional idempotent delivery to a FHIR server.

Mapping (HUB_RESEARCH.md §3):
- Observation per session summary: status `final`; category and code from the local code system
  `LOCAL_SYSTEM` ("automated affect estimate": no LOINC code covers machine-estimated affect, and
  PHQ codes must not be reused for model output); valueQuantity = mean valence (UCUM `1`);
  components: arousal, within-session SD of valence and arousal, the seven label probabilities,
  mood/face/speech coverage; effectivePeriod = the session (start + duration); device = a Device
  resource carrying the software and model versions; identifier = `urn:uuid:<summary event id>`;
  note = the not-a-diagnosis notice.
- Device: identifier = the device id, plus one per version set (`<device>|<sha256 of versions>`),
  so a model update makes a new Device and the discontinuity stays traceable.
- Subject: the clinic's patient reference where the hub holds the mapping (identifier system
  `clinic_system`), else the pseudonymous id (system `PATIENT_SYSTEM`), as a logical reference.
- PHQ-9 total (LOINC 44261-6) and GAD-7 total (70274-6): category `survey`, valueQuantity
  `{score}`, effectiveDateTime = the date taken.
Every entry is POST with `ifNoneExist=identifier=<system>|<value>`: sending the same Bundle again
creates nothing new, so delivery can be retried after any failure.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from device.contract.timestamps import utc_timestamp
from device.errors import AffectboxError
from device.labels import LABELS
from device.notice import NOT_A_DIAGNOSIS
from hub.dashboard.records import SessionPoint, parse_time

LOCAL_SYSTEM = "urn:affectbox:codes"
PATIENT_SYSTEM = "urn:affectbox:patient"
CLINIC_SYSTEM = "urn:affectbox:clinic-ref"
DEVICE_SYSTEM = "urn:affectbox:device"
DEVICE_VERSION_SYSTEM = "urn:affectbox:device-version"
QUESTIONNAIRE_SYSTEM = "urn:affectbox:questionnaire"
URI_SYSTEM = "urn:ietf:rfc:3986"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
LOINC = "http://loinc.org"
QUESTIONNAIRE_CODES = {
    "PHQ-9": ("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"),
    "GAD-7": ("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"),
}
NAMESPACE = uuid.UUID("2d0f5b0e-9a57-4c3e-8f3b-6a1d2f7c9e41")
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class FhirError(AffectboxError):
    """Delivery to the FHIR server failed; the message says how (nothing is lost: send again)."""


def _local(code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": LOCAL_SYSTEM, "code": code, "display": display}], "text": display}


def _quantity(value: float, unit: str = "1") -> dict[str, Any]:
    return {"value": round(float(value), 4), "unit": unit, "system": UCUM, "code": unit}


def _full_url(kind: str, key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, f'{kind}/{key}')}"


def _entry(resource: dict[str, Any], full_url: str, system: str, value: str) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"],
                        "ifNoneExist": f"identifier={system}|{value}"}}


def _subject(patient_id: str, clinic_ref: str | None, clinic_system: str) -> dict[str, Any]:
    if clinic_ref:
        return {"identifier": {"system": clinic_system, "value": clinic_ref}}
    return {"identifier": {"system": PATIENT_SYSTEM, "value": patient_id}}


def device_resource(point: SessionPoint) -> tuple[dict[str, Any], str]:
    """The Device for a session's device and version set, and its version identifier value."""
    versions = [{"type": {"text": "software"}, "value": point.software_version or "unknown"}]
    versions += [{"type": {"text": f"model {name}"}, "value": version or "unknown"}
                 for name, version in sorted(point.models.items())]
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:16]
    version_id = f"{point.device_id}|{digest}"
    return {"resourceType": "Device",
            "identifier": [{"system": DEVICE_SYSTEM, "value": point.device_id},
                           {"system": DEVICE_VERSION_SYSTEM, "value": version_id}],
            "deviceName": [{"name": f"affectbox {point.device_id}", "type": "user-friendly-name"}],
            "type": {"text": "affectbox mood-estimation appliance"},
            "version": versions}, version_id


def session_observation(point: SessionPoint, patient_id: str, clinic_ref: str | None, device_url: str,
                        clinic_system: str = CLINIC_SYSTEM) -> dict[str, Any]:
    start = parse_time(point.at)
    assert start is not None and point.valence is not None and point.summary_event_id
    period = {"start": utc_timestamp(start)}  # the one UTC format (device.contract.timestamps)
    if point.duration_s is not None:
        period["end"] = utc_timestamp(start + timedelta(seconds=point.duration_s))
    components = []

    def add(code: str, display: str, value: float | None) -> None:
        if value is not None:
            components.append({"code": _local(code, display), "valueQuantity": _quantity(value)})

    add("arousal", "Mean arousal", point.arousal)
    add("valence-sd", "Valence variability within the session (SD)", point.valence_sd)
    add("arousal-sd", "Arousal variability within the session (SD)", point.arousal_sd)
    for label in LABELS:
        add(f"prob-{label}", f"Probability of {label}", (point.probs or {}).get(label))
    add("coverage-mood", "Share of windows with a mood estimate", point.coverage.get("mood"))
    add("coverage-face", "Share of frames with a face", point.coverage.get("face"))
    add("coverage-speech", "Share of time with speech", point.coverage.get("speech"))
    return {
        "resourceType": "Observation",
        "identifier": [{"system": URI_SYSTEM, "value": f"urn:uuid:{point.summary_event_id}"}],
        "status": "final",
        "category": [_local("affect-estimate", "Affect estimate")],
        "code": _local("automated-affect-estimate", "Automated affect estimate (face+voice)"),
        "subject": _subject(patient_id, clinic_ref, clinic_system),
        "effectivePeriod": period,
        "valueQuantity": _quantity(point.valence),
        "device": {"reference": device_url},
        "method": {"text": "fusion of on-device facial-expression and speech-emotion models"},
        "note": [{"text": NOT_A_DIAGNOSIS}],
        "component": components,
    }


def questionnaire_observation(row: Mapping[str, Any], patient_id: str, clinic_ref: str | None,
                              clinic_system: str = CLINIC_SYSTEM) -> dict[str, Any]:
    code, display = QUESTIONNAIRE_CODES[row["instrument"]]
    return {
        "resourceType": "Observation",
        "identifier": [{"system": QUESTIONNAIRE_SYSTEM, "value": str(row["id"])}],
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "survey", "display": "Survey"}]}],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": row["instrument"] + " total"},
        "subject": _subject(patient_id, clinic_ref, clinic_system),
        "effectiveDateTime": row["taken_on"],
        "valueQuantity": {"value": int(row["total"]), "unit": "{score}", "system": UCUM, "code": "{score}"},
    }


def bundle(patient_id: str, clinic_ref: str | None, points: Iterable[SessionPoint],
           questionnaires: Sequence[Mapping[str, Any]] = (), clinic_system: str = CLINIC_SYSTEM) -> dict[str, Any]:
    """A transaction Bundle of the patient's finished sessions (with a mean valence) and scores."""
    entries: list[dict[str, Any]] = []
    devices: dict[str, str] = {}
    for point in points:
        if point.valence is None or not point.summary_event_id:
            continue
        device, version_id = device_resource(point)
        if version_id not in devices:
            devices[version_id] = _full_url("Device", version_id)
            entries.append(_entry(device, devices[version_id], DEVICE_VERSION_SYSTEM, version_id))
        obs = session_observation(point, patient_id, clinic_ref, devices[version_id], clinic_system)
        entries.append(_entry(obs, _full_url("Observation", point.summary_event_id), URI_SYSTEM,
                              f"urn:uuid:{point.summary_event_id}"))
    for row in questionnaires:
        obs = questionnaire_observation(row, patient_id, clinic_ref, clinic_system)
        entries.append(_entry(obs, _full_url("Questionnaire", str(row["id"])), QUESTIONNAIRE_SYSTEM, str(row["id"])))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def validate(document: Mapping[str, Any]) -> Any:
    """Parse with fhir.resources' R4B models (Observation and Device are unchanged from R4): the
    Bundle, then every entry's resource with its own model (the Bundle model alone does not)."""
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.bundle import Bundle

    parsed = Bundle.model_validate(document)
    for entry in document.get("entry") or []:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    return parsed


def deliver(document: Mapping[str, Any], base_url: str, token: str | None = None,
            timeout_s: float = 30.0) -> dict[str, Any]:
    """POST the transaction to the server's base URL; returns its transaction-response Bundle."""
    if not base_url.startswith(("http://", "https://")):
        raise FhirError(f"dashboard.fhir_url must be an http(s) URL (got {base_url[:60]!r})")
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base_url.rstrip("/") + "/", data=json.dumps(document).encode(), method="POST",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise FhirError(f"FHIR server answered {exc.code} {exc.reason}; nothing was lost, send again") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FhirError(f"cannot reach the FHIR server at {base_url[:80]} ({reason}); send again later") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise FhirError("the FHIR server's answer is larger than 4 MiB; refusing to read it")
    try:
        answer = json.loads(body)
    except ValueError:
        raise FhirError("the FHIR server's answer is not JSON") from None
    if not isinstance(answer, dict) or answer.get("type") != "transaction-response":
        raise FhirError("the FHIR server did not answer with a transaction-response Bundle")
    return answer
