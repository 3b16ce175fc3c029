"""FastAGI on panoramisk 1.4, with the library's known faults guarded here:

- A handler that is not a coroutine function is wrapped by panoramisk with `asyncio.coroutine`,
  which Python 3.11 removed: `add_route` fails with an AttributeError far from the cause. Here
  it is refused at once with a TypeError that says what to write.
- panoramisk reads the AGI headers with `while b"\\n\\n" not in buffer: buffer += await
  reader.read(100)`. A peer that connects and closes before sending them (a TCP health check, a
  port scan) makes `read` return b"" at once, forever, without yielding: the event loop spins
  and every call of the service stops. Here the headers are read with `readuntil` under a
  timeout and a size limit; a connection that closes, stalls or floods is closed and logged.
- panoramisk parses `200 result= (timeout)` (GET DATA when the caller typed nothing) as no
  result at all: the timeout is lost. `parse_result` keeps it.

A command's answer may be preceded by `HANGUP` (Asterisk's notice that the caller hung up,
sent between commands) and `100 Trying`; `AgiChannel.command` reads past both and remembers
the hang-up.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from panoramisk.fast_agi import Application, Request

log = logging.getLogger(__name__)

HEADER_LIMIT = 16 * 1024
_RESULT = re.compile(r"^(?P<code>\d{3})[ -](?:result=(?P<result>\S*)(?:\s*\((?P<data>[^)]*)\))?)?")


@dataclass(frozen=True)
class AgiResult:
    """One answer to an AGI command. `code` 0: the connection is gone (no answer at all)."""

    code: int
    result: str = ""
    data: str = ""  # the text in parentheses: "timeout", "hangup", "dtmf", ...
    line: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200 and self.result != "-1"

    @property
    def dead(self) -> bool:
        """The channel is gone (511 on a dead channel, or no connection)."""
        return self.code in (0, 511) or self.data == "hangup"

    @property
    def timeout(self) -> bool:
        return self.data == "timeout"

    @property
    def number(self) -> int:
        try:
            return int(self.result)
        except ValueError:
            return 0


def parse_result(line: str) -> AgiResult:
    """Parse one answer line: `200 result=49 endpos=8000`, `200 result= (timeout)`, `510 ...`."""
    m = _RESULT.match(line)
    if m is None:
        return AgiResult(0, line=line)
    return AgiResult(int(m["code"]), m["result"] or "", m["data"] or "", line)


class AgiChannel(Request):  # type: ignore[misc]
    """One FastAGI connection: the call's headers, its URL query, and commands."""

    def __init__(
        self,
        app: Application,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        query: dict[str, str],
    ) -> None:
        super().__init__(app, headers, reader, writer, encoding="utf-8")
        self.query = query
        self.hung_up = False

    def args(self) -> list[str]:
        """AGI(url,ARG1,ARG2,...) as a list."""
        out: list[str] = []
        while f"agi_arg_{len(out) + 1}" in self.headers:
            out.append(self.headers[f"agi_arg_{len(out) + 1}"])
        return out

    async def command(self, text: str) -> AgiResult:
        try:
            self.writer.write(text.encode(self.encoding) + b"\n")
            await self.writer.drain()
            while True:
                raw = await self.reader.readline()
                if not raw:
                    self.hung_up = True
                    return AgiResult(0)
                line = raw.decode(self.encoding, "replace").rstrip("\r\n")
                if line == "HANGUP":
                    self.hung_up = True
                    continue
                result = parse_result(line)
                if result.code == 100:
                    continue
                if line.startswith("520-"):  # usage text follows, up to "520 End of ..."
                    while raw and not raw.startswith(b"520 "):
                        raw = await self.reader.readline()
                if result.code == 511:
                    self.hung_up = True
                return result
        except (ConnectionError, asyncio.IncompleteReadError):
            self.hung_up = True
            return AgiResult(0)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


Handler = Callable[[AgiChannel], Awaitable[None]]


class AgiApplication(Application):  # type: ignore[misc]
    """panoramisk's FastAGI application with its faults guarded (module docstring)."""

    def __init__(self, *, header_timeout_s: float = 5.0) -> None:
        super().__init__(loop=asyncio.get_running_loop())
        self.header_timeout_s = header_timeout_s

    def add_route(self, path: str, endpoint: Handler) -> None:
        if not inspect.iscoroutinefunction(endpoint):
            raise TypeError(
                f"FastAGI route {path!r}: the handler must be a coroutine function (async def); "
                f"panoramisk 1.4 would wrap {endpoint!r} with asyncio.coroutine, gone since "
                f"Python 3.11"
            )
        super().add_route(path, endpoint)

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\n\n"), self.header_timeout_s)
        except asyncio.IncompleteReadError as e:
            # Connected and closed: a health check. Nothing to do, nothing to log loudly.
            log.debug(
                "FastAGI peer %s closed after %d bytes, before its headers", peer, len(e.partial)
            )
            writer.close()
            return
        except (TimeoutError, asyncio.LimitOverrunError, ValueError, ConnectionError) as e:
            log.warning("FastAGI peer %s sent no AGI headers (%s); closed", peer, type(e).__name__)
            writer.close()
            return
        headers: dict[str, str] = {}
        for line in raw.decode("utf-8", "replace").splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                headers[key.strip()] = value.strip()
        script = headers.get("agi_network_script", "")
        path, _, query = script.partition("?")
        route: Any = self._route.get(path)
        if route is None:
            log.warning("FastAGI peer %s asked for %r: no such route; closed", peer, path[:40])
            writer.close()
            return
        channel = AgiChannel(self, headers, reader, writer, dict(parse_qsl(query)))
        try:
            await route(channel)
        except Exception:
            log.exception("FastAGI handler for %r failed", path)
        finally:
            channel.close()
