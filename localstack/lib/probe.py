#!/usr/bin/env python3
"""Readiness probes for the signet local stack (standard library only).

  probe.py tcp  PORT                      -> is anything listening on 127.0.0.1:PORT
  probe.py amqp PORT [USER PASS VHOST]    -> full AMQP 0-9-1 handshake + login
  probe.py s3   URL [BUCKET...]            -> does URL answer like S3 (unsigned
                                             ListBuckets, as moto allows), and do
                                             all BUCKETs exist

Exit codes: 0 ok, 1 nothing listening / connection refused,
            2 something listens but is not what we want (reason on stderr),
            3 something listens but did not answer in time (a busy or
              booting server: worth asking again).
"""
import http.client
import re
import socket
import struct
import sys
import urllib.error
import urllib.request

HOST = "127.0.0.1"
TIMEOUT = 3.0


class NotWanted(Exception):
    pass


class TooSlow(Exception):
    pass


def tcp(port):
    with socket.create_connection((HOST, int(port)), timeout=TIMEOUT):
        return


# --- AMQP 0-9-1 -----------------------------------------------------------

def _shortstr(s):
    b = s.encode()
    return struct.pack("B", len(b)) + b


def _longstr(b):
    return struct.pack(">I", len(b)) + b


def _send_method(sock, class_id, method_id, args):
    payload = struct.pack(">HH", class_id, method_id) + args
    sock.sendall(struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce")


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise NotWanted("connection closed by peer (%d bytes so far)" % len(buf))
        buf += chunk
    return buf


def _recv_method(sock):
    while True:
        head = _recv_exact(sock, 7)
        if head.startswith(b"AMQP"):
            rest = _recv_exact(sock, 1)
            raise NotWanted("server wants protocol %r, not AMQP 0-9-1" % (head + rest))
        ftype, _chan, size = struct.unpack(">BHI", head)
        payload = _recv_exact(sock, size)
        if _recv_exact(sock, 1) != b"\xce":
            raise NotWanted("bad AMQP frame end")
        if ftype == 8:  # heartbeat
            continue
        if ftype != 1:
            raise NotWanted("unexpected AMQP frame type %d" % ftype)
        class_id, method_id = struct.unpack(">HH", payload[:4])
        return class_id, method_id, payload[4:]


def _expect(sock, want):
    c, m, args = _recv_method(sock)
    if (c, m) == (10, 50):  # connection.close
        code = struct.unpack(">H", args[:2])[0]
        text = args[3:3 + args[2]].decode(errors="replace")
        raise NotWanted("server closed connection: %d %s" % (code, text))
    if (c, m) != want:
        raise NotWanted("expected AMQP method %r, got %r" % (want, (c, m)))
    return args


def amqp(port, user="guest", password="guest", vhost="/"):
    with socket.create_connection((HOST, int(port)), timeout=TIMEOUT) as sock:
        try:
            _amqp_session(sock, user, password, vhost)
        except socket.timeout as e:  # after connect: busy, not refused
            raise TooSlow("%s: %s" % (type(e).__name__, e))
        except ConnectionError as e:  # after connect: not refused
            raise NotWanted("%s: %s" % (type(e).__name__, e))


def _amqp_session(sock, user, password, vhost):
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    try:
        _expect(sock, (10, 10))  # connection.start
    except socket.timeout:
        raise TooSlow("no AMQP banner within %.0f s" % TIMEOUT)
    response = b"\x00" + user.encode() + b"\x00" + password.encode()
    _send_method(sock, 10, 11,  # connection.start-ok
                 _longstr(b"") + _shortstr("PLAIN") + _longstr(response) + _shortstr("en_US"))
    try:
        args = _expect(sock, (10, 30))  # connection.tune
    except (NotWanted, ConnectionError) as e:
        raise NotWanted("login as %s failed (%s)" % (user, e))
    channel_max, frame_max, _hb = struct.unpack(">HIH", args[:8])
    _send_method(sock, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0))
    _send_method(sock, 10, 40, _shortstr(vhost) + _shortstr("") + b"\x00")  # open
    _expect(sock, (10, 41))  # open-ok
    _send_method(sock, 10, 50, struct.pack(">H", 200) + _shortstr("probe done") + struct.pack(">HH", 0, 0))
    try:
        _expect(sock, (10, 51))  # close-ok
    except NotWanted:
        pass


# --- S3 -------------------------------------------------------------------

def s3(url, *want_buckets):
    """S3 answers at url; with bucket names: and all of them exist (exit 2 if not)."""
    req = urllib.request.Request(url.rstrip("/") + "/", method="GET")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            body = r.read(65536)
    except urllib.error.HTTPError as e:
        body = e.read(65536)
        # An S3 that insists on auth still answers with an S3 XML error.
        if b"<Error>" in body and (b"AccessDenied" in body or b"Signature" in body):
            if want_buckets:
                raise NotWanted("S3 needs signed requests; cannot list buckets")
            return
        raise NotWanted("HTTP %d from %s" % (e.code, url))
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError):
            raise
        raise NotWanted(str(e.reason))
    except (ConnectionError, OSError, http.client.HTTPException) as e:  # connected, then junk
        raise NotWanted("%s: %s" % (type(e).__name__, e))
    if b"ListAllMyBucketsResult" not in body:
        raise NotWanted("%s answers HTTP but not like S3" % url)
    if want_buckets:
        have = set(re.findall(r"<Name>([^<]+)</Name>", body.decode(errors="replace")))
        missing = [b for b in want_buckets if b not in have]
        if missing:
            raise NotWanted("missing buckets: %s" % " ".join(missing))


def main(argv):
    if len(argv) < 3 or argv[1] not in ("tcp", "amqp", "s3"):
        print(__doc__, file=sys.stderr)
        return 64
    try:
        {"tcp": tcp, "amqp": amqp, "s3": s3}[argv[1]](*argv[2:])
        return 0
    except ConnectionRefusedError:
        return 1
    except urllib.error.URLError as e:
        if isinstance(e.reason, ConnectionRefusedError):
            return 1
        print("probe %s %s: %s" % (argv[1], argv[2], e), file=sys.stderr)
        return 2
    except (TooSlow, socket.timeout) as e:
        print("probe %s %s: %s" % (argv[1], argv[2], e), file=sys.stderr)
        return 3
    except (NotWanted, OSError) as e:
        print("probe %s %s: %s" % (argv[1], argv[2], e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
