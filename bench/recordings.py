"""Memory and CPU of storing call recordings as calls end together: the recording streamed to
disk as it is downloaded (hashed on the way), against the whole file read into memory first and
then saved (the way before), in the same process.

    .venv/bin/python bench/recordings.py [--calls 200] [--seconds 40] [--rounds 3] [--key]

A local HTTP server on 127.0.0.1 stands in for Asterisk's `GET /ari/recordings/stored/NAME/file`
(a closed 8 kHz 16-bit WAV of `--seconds`); the service's own ARI client downloads `--calls` of
them at once into a temporary folder. Printed per way: the peak of Python's allocations during
the downloads (tracemalloc) and the CPU per recording (measured in separate passes without
tracemalloc). Peak RSS is not: a process keeps the heap of its first burst, so it says
nothing about the second way in the same process."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from consent_ivr import audio  # noqa: E402
from consent_ivr.ari.client import AriClient  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def wav(seconds: float, rate: int = 8000) -> bytes:
    body = os.urandom(int(seconds * rate) * 2)
    fmt = (
        (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + rate.to_bytes(4, "little")
        + (rate * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
    )
    riff = (36 + len(body)).to_bytes(4, "little")
    return b"RIFF" + riff + b"WAVEfmt " + fmt + b"data" + len(body).to_bytes(4, "little") + body


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--seconds", type=float, default=40.0, help="length of each recording")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--key", action="store_true", help="encrypt at rest (a random key)")
    args = p.parse_args()
    key = os.urandom(32) if args.key else None
    body = wav(args.seconds)

    async def serve(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="audio/wav")

    app = web.Application()
    app.router.add_get("/ari/recordings/stored/{name}/file", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = AriClient(f"http://127.0.0.1:{port}", "bench", "bench", "bench")
    await client.start(events=False)
    tmp = Path(tempfile.mkdtemp(prefix="recordings-bench-"))

    def save_whole(folder: Path, name: str, data: bytes) -> None:
        """The old way's write: the whole recording, already in memory, in one go."""
        writer = audio.AudioWriter(folder, name, key)
        try:
            writer.write(data)
            writer.commit()
        finally:
            writer.discard()

    async def whole(name: str, folder: Path) -> None:
        assert client._session is not None
        async with client._session.get(f"{client.base}/recordings/stored/{name}/file") as r:
            data = await r.read()
        assert audio.wav_closed(data)
        await asyncio.to_thread(save_whole, folder, f"{name}.wav", data)

    async def streamed(name: str, folder: Path) -> None:
        writer = audio.AudioWriter(folder, f"{name}.wav", key)
        try:
            assert await client.closed_recording(name, 5.0, writer)
            await asyncio.to_thread(writer.commit)
        finally:
            writer.discard()

    async def one_pass(way: Callable[[str, Path], Awaitable[None]], tag: str) -> float:
        folder = tmp / tag
        started = time.process_time()
        await asyncio.gather(*(way(f"c{i}", folder) for i in range(args.calls)))
        cpu = time.process_time() - started
        shutil.rmtree(folder)
        return cpu

    ways = {"whole, then saved (before)": whole, "streamed to disk (after)": streamed}
    figures: dict[str, dict[str, list[float]]] = {w: {"mem": [], "cpu": []} for w in ways}
    for r in range(args.rounds):
        for label, way in ways.items():
            await one_pass(way, "warm")
            tracemalloc.start()
            await one_pass(way, f"m{r}")
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            figures[label]["mem"].append(peak / 2**20)
            figures[label]["cpu"].append(await one_pass(way, f"c{r}") * 1000 / args.calls)
    await client.close()
    await runner.cleanup()
    shutil.rmtree(tmp, ignore_errors=True)

    size = len(body) / 2**20
    print(
        f"{args.calls} recordings of {args.seconds:.0f} s ({size:.2f} MB each) at once, "
        f"{'encrypted' if key else 'plain'}, {args.rounds} rounds (min-max):"
    )
    print("| way | peak Python allocations | CPU per recording |")
    print("|---|---|---|")
    for label, f in figures.items():
        print(
            f"| {label} | {min(f['mem']):.1f}-{max(f['mem']):.1f} MB "
            f"| {min(f['cpu']):.2f}-{max(f['cpu']):.2f} ms |"
        )
    before, after = (sorted(f["mem"])[len(f["mem"]) // 2] for f in figures.values())
    print(f"ratio after/before, peak Python allocations (medians): {after / before:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
