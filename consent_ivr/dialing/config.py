"""How a campaign dials: settings under `campaigns.<name>.dialing` (consent_ivr.config embeds
this model; it must not import consent_ivr.config)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Dialing(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Asterisk dial string, {number} (E.164) and {digits} filled in, e.g. PJSIP/{digits}@trunk
    endpoint: str | None = None
