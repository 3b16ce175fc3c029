"""The person's phone in the end-to-end tests: SIPp (Debian package `sip-tester`) as a SIP
UAS on 127.0.0.2, where scripts/asterisk.sh points the `sipp` PJSIP endpoint. It answers and
presses RFC 4733 keys over a stream of microphone audio, rejects with 486, or never answers.

The scenarios are the XML files beside this module, filled in per test; the audio is made with
sox at test time (never committed): `voice` says a word and then listens (a person, also to
AMD), `machine` talks on like an answering machine's greeting."""

from __future__ import annotations

import contextlib
import shutil
import string
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEYS = Path("/usr/share/sip-tester")
PCAP = {
    **{d: KEYS / f"dtmf_2833_{d}.pcap" for d in "0123456789"},
    "*": KEYS / "dtmf_2833_star.pcap",
    "#": KEYS / "dtmf_2833_pound.pcap",
}
AUDIO = {
    # a word, then a person listening (silence): AMD says HUMAN
    "voice": ["synth", "0.7", "pinknoise", "vol", "0.3", "pad", "0.3", "90"],
    # a long greeting: AMD says MACHINE
    "machine": ["synth", "20", "pinknoise", "vol", "0.3", "pad", "0.3", "60"],
}
# Keys of one step go this far apart (a double tap), in milliseconds.
TAP_MS = 300


def available() -> str | None:
    """Why SIPp cannot run here, or None."""
    for tool in ("sipp", "sox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install sip-tester sox)"
    if not PCAP["1"].exists():
        return f"{PCAP['1']} is missing (the sip-tester package ships it)"
    return None


def audio(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.al"
    if not path.exists():
        cmd = ["sox", "-n", "-r", "8000", "-c", "1", "-t", "al", str(path), *AUDIO[kind]]
        subprocess.run(cmd, check=True, capture_output=True)
    return path


def _keys(steps: Sequence[tuple[float, str]]) -> str:
    """Pauses and key presses: each step's time counts from the answer."""
    out, elapsed_ms = [], 0
    for at_s, digits in steps:
        wait = max(int(at_s * 1000) - elapsed_ms, 0)
        out.append(f'  <pause milliseconds="{wait}"/>')
        elapsed_ms += wait
        for i, digit in enumerate(digits):
            if i:
                out.append(f'  <pause milliseconds="{TAP_MS}"/>')
                elapsed_ms += TAP_MS
            out.append(f'  <nop><action><exec play_pcap_audio="{PCAP[digit]}"/></action></nop>')
    return "\n".join(out)


WAIT_FOR_BYE = """  <recv request="BYE"/>
  <send><![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>"""

HANG_UP = """  <pause milliseconds="{ms}"/>
  <send retrans="500"><![CDATA[

BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:phone@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To: [$caller]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:phone@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>"""


def scenario(
    kind: str,
    folder: Path,
    *,
    keys: Sequence[tuple[float, str]] = (),
    hangup_after_s: float | None = None,
    ring_s: float = 0.3,
    voice: str = "voice",
) -> Path:
    """Write the scenario file of one behaviour: answer, busy or noanswer."""
    text = (HERE / f"{kind}.xml").read_text(encoding="utf-8")
    if kind == "answer":
        # where the key steps leave the scenario's clock
        steps_ms = int(keys[-1][0] * 1000) + TAP_MS * (len(keys[-1][1]) - 1) if keys else 0
        ending = WAIT_FOR_BYE
        if hangup_after_s is not None:
            ending = HANG_UP.format(ms=max(int(hangup_after_s * 1000) - steps_ms, 0))
            # the caller's From becomes the To of our BYE
            text = text.replace(
                '<recv request="INVITE" crlf="true"/>',
                '<recv request="INVITE" crlf="true" rrs="true">\n'
                '    <action><ereg regexp=".*" search_in="hdr" header="From:" '
                'assign_to="caller"/></action>\n  </recv>',
            )
        text = string.Template(text).substitute(
            ring_ms=int(ring_s * 1000),
            audio=audio(voice, folder),
            keys=_keys(keys),
            ending=ending,
        )
    path = folder / f"{kind}-{time.monotonic_ns()}.xml"
    path.write_text(text, encoding="utf-8")
    return path


def _bound(port: int) -> bool:
    out = subprocess.run(["ss", "-Hlun", f"sport = :{port}"], capture_output=True, text=True).stdout
    return "127.0.0.2" in out


@contextlib.contextmanager
def phone(
    kind: str,
    port: int,
    folder: Path,
    *,
    keys: Sequence[tuple[float, str]] = (),
    hangup_after_s: float | None = None,
    ring_s: float = 0.3,
    voice: str = "voice",
) -> Iterator[subprocess.Popen[bytes]]:
    """SIPp answering every call to 127.0.0.2:`port` the same way, until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    path = scenario(
        kind, folder, keys=keys, hangup_after_s=hangup_after_s, ring_s=ring_s, voice=voice
    )
    errors = path.with_suffix(".errors.log")
    cmd = [
        "sipp",
        "-sf",
        str(path),
        "-i",
        "127.0.0.2",
        "-mi",
        "127.0.0.2",
        "-p",
        str(port),
        "-mp",
        str(port + 20000),
        "-l",
        "1000",
        "-aa",
        "-nostdin",
        "-timeout",
        "900",
        "-trace_err",
        "-error_file",
        str(errors),
    ]
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _bound(port):
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"sipp exited at start ({proc.returncode}): {stderr[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sipp did not bind 127.0.0.2:{port}")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
