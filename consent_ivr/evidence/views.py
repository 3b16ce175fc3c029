"""A record as the standards name it: the ISO/IEC TS 27560 consent record structure, and a
Kantara Consent Receipt (v1.1). Pure functions of the record's cache columns, its subject and
its events, so a bundle's record.json can be recomputed and compared by `verify FILE.zip`.
Nothing here depends on the time of the export."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consent_ivr.clock import iso
from consent_ivr.evidence.checks import Event
from consent_ivr.store.chain import LIFECYCLE

KANTARA_VERSION = "KI-CR-v1.1.0"
ISO_27560 = "ISO/IEC TS 27560:2023"


def _purpose(cols: dict[str, Any]) -> dict[str, Any]:
    return cols.get("purpose") or {}


def _controller(cols: dict[str, Any]) -> dict[str, Any]:
    return cols.get("controller") or {}


def iso27560(
    cols: dict[str, Any], personal: dict[str, Any], events: Sequence[Event]
) -> dict[str, Any]:
    purpose, controller = _purpose(cols), _controller(cols)
    return {
        "record": {
            "schema_version": ISO_27560,
            "record_id": cols["record_id"],
            "record_schema_version": cols.get("schema_version"),
            "pii_principal_id": personal.get("phone"),
            "pii_principal_id_source": cols.get("phone_source"),
        },
        "pii_processing": {
            "privacy_notice": purpose.get("privacy_notice_url"),
            "language": cols.get("language"),
            "purposes": [
                {
                    "purpose_id": cols.get("purpose_id"),
                    "purpose": purpose.get("text"),
                    "lawful_basis": purpose.get("lawful_basis"),
                    "pii_information": [{"pii_type": purpose.get("data_categories")}],
                    "pii_controllers": ["controller"],
                    "collection_method": [cols.get("collection_method"), cols.get("direction")],
                    "retention_period": purpose.get("retention"),
                    "validity_period": purpose.get("validity"),
                    "erase_after_withdrawal": purpose.get("erase_after_withdrawal"),
                    "services": [cols.get("campaign")],
                    "jurisdiction": cols.get("jurisdiction"),
                    "withdrawal_method": purpose.get("withdrawal"),
                }
            ],
        },
        "party_identification": [
            {
                "party_id": "controller",
                "party_name": controller.get("name"),
                "party_contact": controller.get("contact"),
                "party_role": "PII Controller",
                "on_behalf_of": controller.get("on_behalf_of"),
            }
        ],
        "presented_notice": [
            {
                "notice_time": iso(e.at),
                "prompt": e.data.get("prompt"),
                "text": e.data.get("text"),
                "version": e.data.get("version"),
                "audio_sha256": e.data.get("sha256"),
            }
            for e in events
            if e.kind == "prompt"
        ],
        "event": [
            {"event_time": iso(e.at), "state": e.kind, "type": "explicit", "seq": e.seq, **e.data}
            for e in events
            if e.kind in (*LIFECYCLE, "erased") and e.seq > 1
        ],
    }


def kantara(
    cols: dict[str, Any], personal: dict[str, Any], events: Sequence[Event]
) -> dict[str, Any]:
    """The Kantara Consent Receipt v1.1 view (consentTimestamp in epoch seconds, as it asks)."""
    purpose, controller = _purpose(cols), _controller(cols)
    decided = next((e for e in events if e.kind in ("given", "refused", "withdrawal")), None)
    contact = str(controller.get("contact") or "")
    return {
        "version": KANTARA_VERSION,
        "jurisdiction": cols.get("jurisdiction"),
        "consentTimestamp": int(decided.at.timestamp()) if decided else None,
        "collectionMethod": f"{cols.get('collection_method')}, {cols.get('direction')} call",
        "consentReceiptID": cols["record_id"],
        "language": cols.get("language"),
        "piiPrincipalId": personal.get("phone"),
        "piiControllers": [
            {
                "piiController": controller.get("name"),
                "onBehalf": bool(controller.get("on_behalf_of")),
                "contact": contact,
                "email": contact if "@" in contact else "",
            }
        ],
        "policyUrl": purpose.get("privacy_notice_url"),
        "services": [
            {
                "service": cols.get("campaign"),
                "purposes": [
                    {
                        "purpose": purpose.get("text"),
                        "purposeCategory": [cols.get("purpose_id")],
                        "consentType": "EXPLICIT",
                        "piiCategory": [purpose.get("data_categories")],
                        "primaryPurpose": True,
                        "termination": purpose.get("withdrawal"),
                        "thirdPartyDisclosure": False,
                    }
                ],
            }
        ],
        "sensitive": False,
        "spiCat": [],
        "outcome": cols.get("outcome"),
        "status": cols.get("status"),
    }
