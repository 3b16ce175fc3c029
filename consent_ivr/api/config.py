"""The `api` section of config.yaml: the HTTP API, the compliance console and /metrics.

(consent_ivr.config embeds this model; it must not import consent_ivr.config.)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ApiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # /v1 and the console; /healthz, /readyz and /metrics are served whenever http is.
    enabled: bool = True
    console: bool = True
    # Requests per second per token (a token may have its own, `tokens create --rate`), and
    # how many may come at once before the rate applies.
    rate_per_s: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)
    # A token is looked up in the database at most this often: a revoked token stops working
    # within this many seconds.
    token_cache_s: float = Field(default=5.0, ge=0)
    # Reads are audited in batches written at most this many seconds later; writes (calls,
    # withdrawals) in their own transaction.
    audit_flush_s: float = Field(default=1.0, gt=0)
    # The console's login lasts this long (and ends when the service restarts).
    console_session_h: float = Field(default=8.0, gt=0)
    # The most records one page of GET /v1/records holds.
    page_max: int = Field(default=500, ge=1, le=5000)
    # Each readiness check (ARI, database, recordings folder, SMS gateway) gives up after this.
    ready_timeout_s: float = Field(default=2.0, gt=0)
