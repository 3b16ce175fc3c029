"""Settings of the FastAGI server (the `agi` section; see consent_ivr.agi.server)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class AgiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False  # also serve FastAGI inside `consent-ivr run`
    host: str = "127.0.0.1"
    port: int = Field(default=4573, ge=0, le=65535)
    # Where MixMonitor writes the recordings, as Asterisk sees the folder, and where this
    # service reads the same folder (a shared mount; None: the same path, one machine).
    recordings_on_asterisk: Path = Path("/var/spool/asterisk/recording")
    recordings_here: Path | None = None
    # A connection that has not sent its AGI headers by then is closed (a health check, a
    # port scan, a stuck peer): it must never hold anything.
    header_timeout_s: float = Field(default=5.0, gt=0)

    @property
    def local_recordings(self) -> Path:
        return self.recordings_here or self.recordings_on_asterisk
