"""The HTTP API (`/v1`), as integrators use it: may we contact this number, the records and
their evidence, an outbound consent call, an operator's withdrawal.

Every request carries an API token (`consent-ivr tokens create`), whose scopes decide what it
may do; every action is an audit event; each token has its own rate limit. Errors are RFC 9457
problem details naming the field that was wrong. The OpenAPI 3.1 document is built from the
same pydantic models that validate requests and shape responses (consent_ivr.api.schemas), so
the document cannot drift from what the service does.
"""
