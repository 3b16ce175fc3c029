"""consent-ivr: capture consent by phone on Asterisk, as evidence that stands up in a dispute."""

__version__ = "0.1.0"
