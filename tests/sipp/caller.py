"""SIPp as callers (UAC): people phoning the service over real SIP with RTP. Each caller sends
A-law microphone audio all the time (a looped `rtp_stream`, as a phone does), presses keys as
RFC 4733 events at scheduled moments, has its own caller ID (an injection file), and either waits
for the IVR to hang up or hangs up itself at a given moment.

One `sipp` process runs one behaviour (a scenario) for as many callers as it is given; the soak
(bench/soak.py) and the benchmark run several at once, each on its own local port of 127.0.0.2,
where scripts/asterisk.sh identifies the `sipp` PJSIP endpoint (no registration, no auth).

A BYE from the IVR is expected at any moment: every wait of the scenario is a `recv BYE` with a
timeout that goes on to the next key, so an IVR that ends the call early never leaves SIPp with
an "unexpected BYE".
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.sipp.phone import PCAP, TAP_MS

# A caller's scheduled keys: (seconds after the answer, digits). Digits of one step are a double
# tap TAP_MS apart.
Keys = Sequence[tuple[float, str]]

INVITE = """  <send retrans="500">
    <![CDATA[

INVITE sip:[field1]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field1]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:[field0]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=caller 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 8 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv

]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[

ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field1]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:[field0]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
  <nop>
    <action>
      <exec rtp_stream="{audio},-1,8"/>
      <log message="answered [field0]"/>
    </action>
  </nop>
"""

# The IVR's BYE, wherever it comes: answered, and the call ends there.
ANSWER_BYE = """  <label id="bye"/>
  <send>
    <![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
"""

# The caller hangs up.
SEND_BYE = """  <label id="hangup"/>
  <send retrans="500">
    <![CDATA[

BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:[field0]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[field1]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:[field0]@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
  <recv response="200" next="end"/>
"""

# How long the audio pauses for a key, in milliseconds: the sip-tester pcaps last 140 ms, and
# SIPp starts playing them in a thread of its own, late when the machine is loaded.
KEY_MS = 500

# How long a caller who waits for the IVR's goodbye waits at most, in milliseconds.
LISTEN_MS = 180_000


def _wait(ms: int, then: str) -> str:
    """Wait `ms` for the IVR's BYE; without one, go on at label `then`."""
    return f'  <recv request="BYE" timeout="{max(ms, 1)}" ontimeout="{then}" next="bye"/>\n'


def scenario_xml(keys: Keys, hangup_at: float | None, audio: Path) -> str:
    """The scenario of one behaviour: call, keys at their moments (seconds after the answer),
    then hang up at `hangup_at` or wait for the IVR's BYE."""
    body = [INVITE.format(audio=audio)]
    elapsed_ms = 0
    taps = [(int(at * 1000) + i * TAP_MS, d) for at, digits in keys for i, d in enumerate(digits)]
    for n, (at_ms, digit) in enumerate(sorted(taps)):
        body.append(_wait(at_ms - elapsed_ms, f"k{n}"))
        body.append(f'  <label id="k{n}"/>\n')
        # A phone sends the key's events instead of its audio, not both (RFC 4733 2.5.1.4):
        # two RTP streams interleaved make Asterisk read one key as several.
        body.append(
            '  <nop><action><exec rtp_stream="pause"/>'
            f'<exec play_pcap_audio="{PCAP[digit]}"/></action></nop>\n'
        )
        body.append(_wait(KEY_MS, f"k{n}r"))
        body.append(f'  <label id="k{n}r"/>\n')
        body.append('  <nop><action><exec rtp_stream="resume"/></action></nop>\n')
        elapsed_ms = max(elapsed_ms, at_ms) + KEY_MS
    if hangup_at is None:
        body.append(f'  <recv request="BYE" timeout="{LISTEN_MS}" next="bye"/>\n')
    else:
        body.append(_wait(int(hangup_at * 1000) - elapsed_ms, "hangup"))
    body.append(ANSWER_BYE)
    body.append('  <nop next="end"/>\n')
    body.append(SEND_BYE)
    body.append('  <label id="end"/>\n  <nop/>\n')
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
        '<scenario name="consent-ivr caller">\n' + "".join(body) + "</scenario>\n"
    )


def microphone(folder: Path) -> Path:
    """Ten seconds of quiet pink noise in raw A-law, looped by each caller (made with sox at
    run time, never committed)."""
    path = folder / "microphone.al"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = ["sox", "-n", "-r", "8000", "-c", "1", "-t", "al", str(path)]
        subprocess.run([*cmd, "synth", "10", "pinknoise", "vol", "0.05"], check=True)
    return path


@dataclass(frozen=True)
class Behaviour:
    """What a group of callers does: keys at their moments, then hang up or listen."""

    name: str
    keys: Keys = ()
    hangup_at: float | None = None


@dataclass
class Callers:
    """One running `sipp` process: `numbers` calling `exten` with one behaviour."""

    behaviour: Behaviour
    numbers: list[str]
    proc: subprocess.Popen[bytes]
    folder: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait()

    def answered(self) -> set[str]:
        """The numbers whose call was answered (from the `-trace_logs` file)."""
        found: set[str] = set()
        for path in self.folder.glob(f"{self.behaviour.name}_*_logs.log"):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("answered "):
                    found.add(line.split()[1])
        return found

    def errors(self) -> str:
        path = self.folder / f"{self.behaviour.name}.errors.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start(
    behaviour: Behaviour,
    numbers: Sequence[str],
    *,
    target: str,
    exten: str,
    folder: Path,
    port: int,
    rate: float = 10.0,
    limit: int = 1000,
    media_port: int | None = None,
) -> Callers:
    """Start one `sipp` placing a call from each of `numbers` to `exten` at `target`
    (host:port of the Asterisk's PJSIP transport), `rate` new calls a second, at most `limit`
    at once. Local SIP port `port` on 127.0.0.2; RTP from `media_port` (default 10000 + port)
    upwards, a pair per call in progress."""
    folder.mkdir(parents=True, exist_ok=True)
    xml = folder / f"{behaviour.name}.xml"
    xml.write_text(
        scenario_xml(behaviour.keys, behaviour.hangup_at, microphone(folder)), encoding="utf-8"
    )
    inf = folder / f"{behaviour.name}.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{n};{exten};\n" for n in numbers))
    cmd = [
        "sipp",
        target,
        "-sf",
        str(xml),
        "-inf",
        str(inf),
        "-i",
        "127.0.0.2",
        "-mi",
        "127.0.0.2",
        "-p",
        str(port),
        "-mp",
        str(media_port or port + 10000),
        "-m",
        str(len(numbers)),
        "-r",
        f"{rate:g}",
        "-rp",
        "1000",
        "-l",
        str(limit),
        "-nostdin",
        "-timeout",
        "900",
        "-trace_err",
        "-error_file",
        str(folder / f"{behaviour.name}.errors.log"),
        "-trace_logs",
        "-trace_msg",
        "-trace_stat",
        "-stf",
        str(folder / f"{behaviour.name}.stat.csv"),
    ]
    proc = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return Callers(behaviour, list(numbers), proc, folder)
