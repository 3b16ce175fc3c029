"""SMS settings (the SMS worker owns this model; consent_ivr.config embeds it under `sms`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class SmsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    gateway: Literal["log", "kannel", "smpp"] = "log"
