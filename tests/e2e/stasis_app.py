"""The Stasis app `consent-ivr` on a shared private Asterisk.

The dialplan sends every consent call to the app named `consent-ivr`, and Asterisk gives an
app's calls to the websocket that registered it LAST: the earlier one receives
`ApplicationReplaced` and goes deaf (checked on 22.10). Two services connected at once (this
session and another engineer's) would take each other's calls, so a test that connects one
waits until no other is connected, and polls until its own is.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Callable

APP = "consent-ivr"
# Another session's e2e module keeps its service connected for a few minutes at most.
FREE_TIMEOUT_S = 240.0


def registered_apps(ari: dict[str, str]) -> set[str]:
    """Names of the Stasis apps a websocket is connected for (`GET /ari/applications`)."""
    auth = f"{ari['CONSENT_IVR_ARI_USER']}:{ari['CONSENT_IVR_ARI_PASSWORD']}"
    request = urllib.request.Request(
        ari["CONSENT_IVR_ARI_URL"].rstrip("/") + "/ari/applications",
        headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        return {app["name"] for app in json.load(resp)}


def wait_for_app(
    ari: dict[str, str],
    *,
    present: bool,
    timeout: float,
    alive: Callable[[], None] | None = None,
) -> None:
    """Wait until the app is (or is no longer) registered; `alive` raises if the service died."""
    deadline = time.monotonic() + timeout
    while (APP in registered_apps(ari)) is not present:
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            state = "connected" if present else "free"
            raise AssertionError(
                f"Stasis app {APP!r} not {state} within {timeout:.0f}s"
                + ("" if present else " (another session's service is using this Asterisk)")
            )
        time.sleep(0.2)


def wait_until_free(ari: dict[str, str]) -> None:
    """Do not steal the calls of a service another session has connected."""
    wait_for_app(ari, present=False, timeout=FREE_TIMEOUT_S)
