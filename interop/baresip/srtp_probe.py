#!/usr/bin/env python3
"""Probe a baresip's SRTP (SDES) by hand: a tiny UAC with its own SRTP.

    srtp_probe.py PORT [--suite SUITE] [--reoffer same|new|move]

Calls sip:carol@127.0.0.1:PORT (a baresip of run.sh with --auto-answer and
--mediaenc srtp-mand) from 127.0.0.1 with an RTP/SAVP offer of one crypto
line of SUITE (AES_CM_128_HMAC_SHA1_80 (default), AES_CM_128_HMAC_SHA1_32
or AEAD_AES_128_GCM), sends 50 SRTP packets (PCMU silence, 20 ms apart),
re-INVITEs (with the same key, a new key, or the same key from a new
address 127.0.0.3), sends 50 more, then replays one old packet and sends
one with a flipped bit, and hangs up. Every packet baresip sends is
checked with the key of its answer. Prints the answers' m= and crypto
lines and the count of baresip's packets that passed; baresip's log tells
what it made of ours (`packets:` and `srtp: failed to decrypt ...`).

SRTP as in RFC 3711 (AES-CM, HMAC-SHA1, the key derivation with rate 0)
and RFC 7714 (AES-GCM, 12-byte salt); ROC 0 throughout. Needs
python3-cryptography. A test tool, not a reference implementation.
"""

import argparse
import base64
import hashlib
import hmac
import os
import random
import re
import socket
import struct
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ap = argparse.ArgumentParser()
ap.add_argument("port", type=int)
ap.add_argument("--suite", default="AES_CM_128_HMAC_SHA1_80",
                choices=["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM"])
ap.add_argument("--reoffer", default="same", choices=["same", "new", "move"])
args = ap.parse_args()
GCM = "GCM" in args.suite
TAG = 4 if args.suite.endswith("_32") else 10
MASTER = 28 if GCM else 30


def keystream(key, iv, n):
    return Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor().update(b"\0" * n)


def derive(key, salt14, label, n):
    x = int.from_bytes(salt14, "big") ^ (label << 48)
    return keystream(key, (x << 16).to_bytes(16, "big"), n)


class Srtp:
    """One direction's session keys, from a master key and salt."""

    def __init__(self, master):
        key = master[:16]
        salt = master[16:] + b"\0" * (14 - len(master[16:]))
        self.k = derive(key, salt, 0, 16)
        self.a = derive(key, salt, 1, 20)
        self.s = derive(key, salt, 2, 12 if GCM else 14)

    def protect(self, seq, ts, ssrc, payload):
        hdr = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc)
        if GCM:
            iv = bytes(a ^ b for a, b in zip(b"\0\0" + struct.pack("!IIH", ssrc, 0, seq), self.s))
            return hdr + AESGCM(self.k).encrypt(iv, payload, hdr)
        iv = (int.from_bytes(self.s, "big") << 16) ^ (ssrc << 64) ^ (seq << 16)
        enc = bytes(a ^ b for a, b in zip(payload, keystream(self.k, iv.to_bytes(16, "big"), len(payload))))
        return hdr + enc + hmac.new(self.a, hdr + enc + b"\0\0\0\0", hashlib.sha1).digest()[:TAG]

    def authentic(self, pk):
        hdr, seq, ssrc = pk[:12], struct.unpack("!H", pk[2:4])[0], struct.unpack("!I", pk[8:12])[0]
        if GCM:
            iv = bytes(a ^ b for a, b in zip(b"\0\0" + struct.pack("!IIH", ssrc, 0, seq), self.s))
            try:
                AESGCM(self.k).decrypt(iv, pk[12:], hdr)
                return True
            except Exception:
                return False
        tag = hmac.new(self.a, pk[:-TAG] + b"\0\0\0\0", hashlib.sha1).digest()[:TAG]
        return tag == pk[-TAG:]


sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sip.bind(("127.0.0.1", 0))
sip.settimeout(5)
lport = sip.getsockname()[1]
rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rtp.bind(("127.0.0.1", 0))
rtp.settimeout(0.01)
call_id = "probe%d" % random.randint(0, 1 << 30)
theirs = {"ok": 0, "bad": 0}


def sdp(master, version, ip):
    return ("v=0\r\no=- 1 %d IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
            "m=audio %d RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=crypto:1 %s inline:%s\r\n"
            % (version, ip, ip, rtp.getsockname()[1], args.suite, base64.b64encode(master).decode()))


def request(method, cseq, to_tag="", body=""):
    msg = (f"{method} sip:carol@127.0.0.1:{args.port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{random.randint(0, 1 << 30)}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1:{lport}>;tag=probe\r\n"
           f"To: <sip:carol@127.0.0.1:{args.port}>{to_tag}\r\nCall-ID: {call_id}\r\n"
           f"CSeq: {cseq} {method}\r\nContact: <sip:probe@127.0.0.1:{lport}>\r\n")
    if body:
        msg += "Content-Type: application/sdp\r\n"
    sip.sendto((msg + f"Content-Length: {len(body)}\r\n\r\n{body}").encode(), ("127.0.0.1", args.port))


def final():
    while True:
        d = sip.recv(65535).decode(errors="replace")
        if int(d.split("\r\n")[0].split()[1]) >= 200:
            return d


def show(what, d):
    body = d.split("\r\n\r\n", 1)[1]
    print(what, d.split("\r\n")[0], [l for l in body.splitlines() if l.startswith(("m=", "a=crypto"))])
    return body


ours = os.urandom(MASTER)
request("INVITE", 1, body=sdp(ours, 1, "127.0.0.1"))
d = final()
answer = show("answer:", d)
to_tag = ";tag=" + re.search(r"^To:.*;tag=([^;\r\n]+)", d, re.M | re.I).group(1)
request("ACK", 1, to_tag)
peer_port = int(re.search(r"m=audio (\d+)", answer).group(1))
peer = Srtp(base64.b64decode(re.search(r"inline:([A-Za-z0-9+/=]+)", answer).group(1)))
tx, ssrc, seq = Srtp(ours), 0x12345678, 1000


def send(n):
    global seq
    last = None
    for _ in range(n):
        last = tx.protect(seq, seq * 160, ssrc, b"\xff" * 160)
        rtp.sendto(last, ("127.0.0.1", peer_port))
        seq += 1
        time.sleep(0.02)
        try:
            while True:
                theirs["ok" if peer.authentic(rtp.recv(2000)) else "bad"] += 1
        except (socket.timeout, BlockingIOError):
            pass
    return last


last = send(50)
ip = "127.0.0.1"
if args.reoffer == "new":
    ours = os.urandom(MASTER)
    tx = Srtp(ours)
elif args.reoffer == "move":
    ip = "127.0.0.3"
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind((ip, 0))
    rtp.settimeout(0.01)
request("INVITE", 2, to_tag, sdp(ours, 2, ip))
show("re-INVITE answer:", final())
request("ACK", 2, to_tag)
send(50)
rtp.sendto(last, ("127.0.0.1", peer_port))
bad = bytearray(tx.protect(seq, seq * 160, ssrc, b"\xff" * 160))
bad[20] ^= 1
rtp.sendto(bytes(bad), ("127.0.0.1", peer_port))
time.sleep(0.3)
request("BYE", 3, to_tag)
print("BYE:", sip.recv(65535).decode(errors="replace").split("\r\n")[0])
print("baresip's packets checked with the key of its answer:", theirs)
print("sent: 100 packets, then 1 replayed and 1 tampered (baresip should log 2 errors)")
