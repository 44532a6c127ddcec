#!/usr/bin/env python3
"""Talk to a baresip's ctrl_tcp module (netstring-framed JSON), stdlib only.

Send one command and print the reply:

    ctrl.py CTRLPORT COMMAND [PARAMS...]
    ctrl.py 47070 dial sip:a@127.0.0.1:47060
    ctrl.py 47070 listcalls
    ctrl.py 47070 hangup

Send a command, then wait for an event (it may also come before the reply):

    ctrl.py 47170 dial sip:a@127.0.0.1:47060 --wait CALL_ESTABLISHED --timeout 10

Only listen, printing every event as one JSON object a line:

    ctrl.py 47070 --events [--until CALL_ESTABLISHED,CALL_CLOSED] [--timeout 30]

Options:
    --host H       ctrl_tcp address (default 127.0.0.1)
    --timeout S    bound on the whole run, seconds (default 10)
    --wait T[,T]   after the command, wait for an event whose "type" is one
                   of these; print it (one JSON line) after the reply
    --events       no command: print events until --until or --timeout
    --until T[,T]  with --events: stop (exit 0) at the first event of a type
    --json         print the raw reply object as JSON instead of its "data"

The wire format (baresip 1.0.0 ctrl_tcp): each message is a netstring,
LENGTH ":" JSON ",". A command is
    {"command": "dial", "params": "sip:...", "token": "..."}
and its reply is
    {"response": true, "ok": true|false, "data": "...", "token": "..."}
Events (to every connected client) look like
    {"event": true, "class": "call", "type": "CALL_ESTABLISHED",
     "accountaor": "sip:...", "direction": "outgoing", "peeruri": "sip:...",
     "id": "...", "param": "..."}

Exit status: 0 the command succeeded (and the event came, with --wait);
1 the command failed ("ok": false), or the event did not come in time
(with --events --until too); 2 bad usage; 3 could not connect, or the
connection broke, or the peer spoke something else. With --events, baresip
closing the connection (it exited) ends the run like the timeout does.
"""

import json
import os
import socket
import sys
import time


def usage(msg=None):
    if msg:
        print(f"ctrl.py: {msg}", file=sys.stderr)
    print("usage: ctrl.py [--host H] [--timeout S] [--json] CTRLPORT COMMAND [PARAMS...] [--wait TYPE[,TYPE]]\n"
          "       ctrl.py [--host H] [--timeout S] CTRLPORT --events [--until TYPE[,TYPE]]",
          file=sys.stderr)
    sys.exit(2)


class Conn:
    def __init__(self, host, port, deadline, eof_ok=False):
        self.deadline = deadline
        self.eof_ok = eof_ok
        self.eof = False
        self.buf = b""
        left = max(0.1, deadline - time.monotonic())
        try:
            self.sock = socket.create_connection((host, port), timeout=min(left, 5.0))
        except OSError as e:
            print(f"ctrl.py: cannot connect to {host}:{port}: {e}", file=sys.stderr)
            sys.exit(3)

    def send(self, obj):
        data = json.dumps(obj, separators=(",", ":")).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data + b",")

    def recv(self):
        """Next JSON object, or None when the deadline passes."""
        while True:
            msg = self._take()
            if msg is not None:
                return msg
            left = self.deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError as e:
                print(f"ctrl.py: connection error: {e}", file=sys.stderr)
                sys.exit(3)
            if not chunk:
                if self.eof_ok:
                    self.eof = True
                    return None
                print("ctrl.py: baresip closed the connection", file=sys.stderr)
                sys.exit(3)
            self.buf += chunk

    def _take(self):
        colon = self.buf.find(b":")
        if colon < 0:
            if len(self.buf) > 10 or (self.buf and not self.buf.isdigit()):
                self._bad()
            return None
        head = self.buf[:colon]
        if not head.isdigit():
            self._bad()
        n = int(head)
        end = colon + 1 + n
        if len(self.buf) < end + 1:
            return None
        if self.buf[end:end + 1] != b",":
            self._bad()
        payload = self.buf[colon + 1:end]
        self.buf = self.buf[end + 1:]
        try:
            return json.loads(payload.decode("utf-8", "replace"))
        except ValueError:
            print(f"ctrl.py: not JSON: {payload[:200]!r}", file=sys.stderr)
            sys.exit(3)

    def _bad(self):
        print(f"ctrl.py: not a netstring: {self.buf[:80]!r}", file=sys.stderr)
        sys.exit(3)


def main(argv):
    host = "127.0.0.1"
    timeout = 10.0
    waits = None
    until = None
    events_only = False
    raw = False
    pos = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-h", "--help"):
            print(__doc__)
            return 0
        if a in ("--host", "--timeout", "--wait", "--until"):
            if i + 1 >= len(argv):
                usage(f"{a} needs a value")
            v = argv[i + 1]
            if a == "--host":
                host = v
            elif a == "--timeout":
                try:
                    timeout = float(v)
                except ValueError:
                    usage(f"bad --timeout {v!r}")
            elif a == "--wait":
                waits = set(t for t in v.split(",") if t)
            else:
                until = set(t for t in v.split(",") if t)
            i += 2
            continue
        if a == "--events":
            events_only = True
        elif a == "--json":
            raw = True
        else:
            pos.append(a)
        i += 1

    if not pos or not pos[0].isdigit():
        usage("CTRLPORT missing")
    port = int(pos[0])
    deadline = time.monotonic() + timeout

    if events_only:
        if len(pos) != 1:
            usage("--events takes no command")
        c = Conn(host, port, deadline, eof_ok=True)
        while True:
            m = c.recv()
            if m is None:
                why = "before baresip closed the connection" if c.eof else f"within {timeout:g}s"
                if until:
                    print(f"ctrl.py: no {'/'.join(sorted(until))} event {why}", file=sys.stderr)
                    return 1
                return 0
            if m.get("event"):
                print(json.dumps(m), flush=True)
                if until and m.get("type") in until:
                    return 0

    if len(pos) < 2:
        usage("COMMAND missing")
    command = pos[1]
    params = " ".join(pos[2:])
    token = f"ctrl.py-{os.getpid()}"
    c = Conn(host, port, deadline)
    c.send({"command": command, "params": params, "token": token})

    reply = None
    seen = None
    while reply is None or (waits and seen is None):
        m = c.recv()
        if m is None:
            break
        if m.get("response") and m.get("token") == token:
            reply = m
        elif m.get("event") and waits and seen is None and m.get("type") in waits:
            seen = m

    if reply is None:
        print(f"ctrl.py: no reply to '{command}' within {timeout:g}s", file=sys.stderr)
        return 1
    if raw:
        print(json.dumps(reply))
    else:
        data = reply.get("data")
        if data:
            sys.stdout.write(data if data.endswith("\n") else data + "\n")
    if not reply.get("ok", False):
        print(f"ctrl.py: '{command}' failed", file=sys.stderr)
        return 1
    if waits:
        if seen is None:
            print(f"ctrl.py: no {'/'.join(sorted(waits))} event within {timeout:g}s",
                  file=sys.stderr)
            return 1
        print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(1)
