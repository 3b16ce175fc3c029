"""The compliance console: server-rendered pages for compliance staff (consent_ivr.console.http)."""
