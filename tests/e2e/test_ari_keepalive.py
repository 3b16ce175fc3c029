"""A request that goes out on a kept-alive connection just as Asterisk closes it (its
http.conf `session_keep_alive` running out at that moment) is sent once more on a new
connection instead of failing the call's prompt. Asterisk is real (16); the moment of the
close cannot be had on demand, so a loopback TCP relay in front of it makes it: armed, it
closes each connection already open as soon as the next request arrives on it, without
passing the request on, which is what Asterisk does to a request that meets a closing
connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from consent_ivr.ari.client import AriClient, AriError
from tests.e2e.conftest import asterisk_env

pytestmark = pytest.mark.e2e


class ClosingRelay:
    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.open: set[asyncio.StreamWriter] = set()
        self.doomed: set[asyncio.StreamWriter] = set()
        self.always = False  # every connection, new ones too, closed at its next request
        self.accepted = 0
        self.closed_under_request = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def close_open_ones_at_their_next_request(self) -> None:
        self.doomed |= self.open

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.open):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.open.add(writer)
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        answers = asyncio.create_task(self._pipe(up_reader, writer))
        try:
            while data := await reader.read(65536):
                if writer in self.doomed or self.always:
                    self.closed_under_request += 1
                    break
                up_writer.write(data)
                await up_writer.drain()
        finally:
            self.open.discard(writer)
            answers.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(OSError):
                    w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@pytest_asyncio.fixture
async def relayed() -> AsyncIterator[tuple[AriClient, ClosingRelay]]:
    env = asterisk_env("16")
    host, _, port = env["CONSENT_IVR_ARI_URL"].removeprefix("http://").partition(":")
    relay = ClosingRelay(host, int(port))
    url = await relay.start()
    ari = AriClient(url, env["CONSENT_IVR_ARI_USER"], env["CONSENT_IVR_ARI_PASSWORD"], "relay")
    await ari.start(events=False)
    try:
        yield ari, relay
    finally:
        await ari.close()
        await relay.stop()


async def play_nowhere(ari: AriClient) -> None:
    await ari.play("no-such-channel", "relay-1", "sound:beep")


# A POST (aiohttp does not send it again by itself) and a DELETE (it does).
EACH_METHOD = pytest.mark.parametrize(
    "request_",
    [play_nowhere, lambda ari: ari.stop_playback("no-such-playback")],
    ids=["POST", "DELETE"],
)


@EACH_METHOD
async def test_a_request_on_a_closing_connection_goes_again(
    relayed: tuple[AriClient, ClosingRelay], request_: Any
) -> None:
    ari, relay = relayed
    assert (await ari.info())["system"]["version"]
    assert relay.accepted == 1, "the first request's connection is kept alive"
    relay.close_open_ones_at_their_next_request()
    with pytest.raises(AriError) as raised:
        await request_(ari)
    assert raised.value.status == 404, "Asterisk's own answer, not the closed connection"
    assert relay.closed_under_request == 1
    assert relay.accepted == 2, "sent again on a new connection"


@EACH_METHOD
async def test_it_goes_again_once_only(
    relayed: tuple[AriClient, ClosingRelay], request_: Any
) -> None:
    ari, relay = relayed
    relay.always = True
    with pytest.raises(AriError) as raised:
        await request_(ari)
    assert raised.value.status == 0 and raised.value.transient
    assert relay.closed_under_request == 2
