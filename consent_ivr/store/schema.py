"""Every table of the product on one metadata, for Alembic and the drift check: the parts keep
their own models (consent_ivr.sms, consent_ivr.dialing, consent_ivr.api) on the one `Base`."""

from __future__ import annotations

import consent_ivr.api.models
import consent_ivr.dialing.models
import consent_ivr.sms.models
from consent_ivr.store.models import Base

metadata = Base.metadata

__all__ = ["consent_ivr", "metadata"]
