#!/usr/bin/env bash
# Self-test of the CALL interop assets, end to end, on 127.0.0.1 only:
#   1. SIPp sipp/uas_echo.xml (-rtp_echo) answers SIPp's built-in uac;
#      RTP sent to its media port comes back (a small python probe)
#   2. SIPp sipp/uac_reinvite_update.xml against sipp/uas_reinvite_update.xml,
#      over UDP and over TCP: INVITE, re-INVITE, UPDATE, BYE; each side saw
#      the other's port change
#   3. baresip B dials baresip A (auto-answer): established on both sides,
#      RTP both ways, hung up through ctrl_tcp
#   4. SIPp's built-in uac (-rtp_echo) calls the auto-answering baresip A
#   5. baresip B calls SIPp sipp/uas_echo.xml; the echo comes back to B
#   6. through Kamailio: baresip A and B register (digest), B calls
#      sip:alice@example.test, Kamailio record-routes, A answers
# Exits 0 if all checks pass, 1 otherwise (saying why), 2 if a tool is missing.
# Every wait is bounded; the whole run takes about 15 s.
# KEEP=1 keeps the work directory (logs, SIPp traces) for a look afterwards.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCEN=$HERE/sipp
BS=$HERE/baresip
KAM=$HERE/kamailio
HARD=40     # kill any SIPp after this many seconds

for t in sipp baresip kamailio kamcmd python3 ss timeout setsid; do
    command -v "$t" >/dev/null || { echo "check_calls.sh: '$t' not found; run interop/install.sh as root" >&2; exit 2; }
done

WORKDIR=$(mktemp -d /tmp/siproam-calls.XXXXXX)
cleanup() {
    for d in "$WORKDIR"/bs-*; do [ -d "$d" ] && "$BS/stop.sh" "$d" >/dev/null 2>&1; done
    [ -d "$WORKDIR/kam" ] && "$KAM/stop.sh" "$WORKDIR/kam" >/dev/null 2>&1
    # SIPp runs we started in the background and that are still there
    for p in $(jobs -p); do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${KEEP:-}" = 1 ]; then echo "check_calls.sh: kept $WORKDIR"; else rm -rf -- "$WORKDIR"; fi
}
trap cleanup EXIT

passed=0
failed=0
ok()   { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
show() {
    echo "--- $1 (last ${2:-15} lines)"
    tail -n "${2:-15}" "$1" 2>/dev/null | awk '{ print "    " $0 }'
}

# N consecutive ports with nothing bound on them (UDP or TCP, any address).
port_in_use() { [ -n "$(ss -Hlnut "sport = :$1" 2>/dev/null)" ]; }
free_block() {
    local n=$1 base i
    for _ in $(seq 1 50); do
        base=$((20000 + RANDOM % 40000))
        for ((i = 0; i < n; i++)); do port_in_use $((base + i)) && continue 2; done
        echo "$base"; return 0
    done
    return 1
}
BASE=$(free_block 40) || { echo "check_calls.sh: no block of free ports" >&2; exit 1; }
# the port plan (baresip takes PORT, PORT+1 (TLS), CTRLPORT)
UAS_P=$BASE;           UAS_MP=$((BASE + 2))     # uas: SIP, media (+2 too)
UAC_P=$((BASE + 6));   UAC_MP=$((BASE + 8))     # uac: SIP, media (+2 too)
A_P=$((BASE + 12));    A_CTRL=$((BASE + 14))    # baresip A
B_P=$((BASE + 16));    B_CTRL=$((BASE + 18))    # baresip B
KAM_P=$((BASE + 20))
A_RTP=$((BASE + 22))-$((BASE + 25))             # baresip A's RTP ports
B_RTP=$((BASE + 26))-$((BASE + 29))             # baresip B's RTP ports

# sipp_bg NAME ARGS... / sipp_fg NAME ARGS...: one SIPp run in WORKDIR/NAME/
sipp_fg() {
    local name=$1; shift
    mkdir -p "$WORKDIR/$name"
    (cd "$WORKDIR/$name" && timeout -k 2 "$HARD" sipp -m 1 -nostdin -timeout 20s -timeout_error \
        -trace_err -trace_msg -trace_logs -i 127.0.0.1 "$@" > out.txt 2>&1)
}
wait_sip_port() {   # SIPp listening on UDP 127.0.0.1:$1 (1 s at most)
    for _ in $(seq 1 20); do
        [ -n "$(ss -Hlnu "sport = :$1" 2>/dev/null)" ] && return 0
        sleep 0.05
    done
    return 1
}
logs_of() { cat "$WORKDIR/$1"/*_logs.log 2>/dev/null; }
why_sipp() { show "$WORKDIR/$1/out.txt" 6; for f in "$WORKDIR/$1"/*_errors.log; do [ -e "$f" ] && show "$f" 10; done; }

# rtp_probe PORT: 20 RTP packets to 127.0.0.1:PORT; prints how many came back
rtp_probe() {
    timeout 10 python3 - "$1" <<'PY'
import socket, struct, sys, time
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(0.3)
got = 0
for i in range(20):
    pkt = struct.pack("!BBHII", 0x80, 0, i, i * 160, 0x51A0) + b"\xff" * 160
    s.sendto(pkt, ("127.0.0.1", port))
    try:
        data, _ = s.recvfrom(2048)
        got += data == pkt
    except socket.timeout:
        pass
    time.sleep(0.01)
print(got)
PY
}

# baresip's RTP summary at the end of a call: "packets:  TX  RX" (last call)
rtp_counts() { grep -a 'packets:' "$1" 2>/dev/null | tail -n 1 | awk '{ print $2, $3 }'; }

# ---------------------------------------------------------------- 1. uas_echo
(sipp_fg uas_echo -sf "$SCEN/uas_echo.xml" -p "$UAS_P" -mi 127.0.0.1 -mp "$UAS_MP" -rtp_echo) &
UAS_JOB=$!
if wait_sip_port "$UAS_P"; then
    echoed=$(rtp_probe "$UAS_MP")
    if [ "${echoed:-0}" -ge 18 ]; then ok "uas_echo: -rtp_echo sent back $echoed of 20 RTP packets"; else fail "uas_echo: RTP echo: $echoed of 20 came back"; fi
    if sipp_fg uac_builtin -sn uac -p "$UAC_P" -mi 127.0.0.1 -mp "$UAC_MP" "127.0.0.1:$UAS_P"; then
        wait "$UAS_JOB"; rc=$?
        if [ $rc -eq 0 ] && logs_of uas_echo | grep -q '^SENT 200 INVITE sdp=1 port=mp fmts=0 dir=sendrecv'; then
            ok "uas_echo answered sipp -sn uac (PCMU only offered -> 'm=... RTP/AVP 0'), BYE 200"
        else
            fail "uas_echo (exit $rc)"; why_sipp uas_echo
        fi
    else
        fail "sipp -sn uac against uas_echo"; why_sipp uac_builtin; wait "$UAS_JOB"
    fi
else
    fail "uas_echo did not start"; why_sipp uas_echo; wait "$UAS_JOB"
fi

# ---------------------------------------------------- 2. re-INVITE and UPDATE
for tr in u1 t1; do
    (sipp_fg "uas_ru_$tr" -t "$tr" -sf "$SCEN/uas_reinvite_update.xml" -p "$UAS_P" -mi 127.0.0.1 -mp "$UAS_MP" -rtp_echo) &
    UAS_JOB=$!
    sleep 0.3
    if sipp_fg "uac_ru_$tr" -t "$tr" -sf "$SCEN/uac_reinvite_update.xml" -p "$UAC_P" -mi 127.0.0.1 -mp "$UAC_MP" -rtp_echo -d 100 "127.0.0.1:$UAS_P"; then
        wait "$UAS_JOB"; rc=$?
        uas_saw=$(logs_of "uas_ru_$tr" | sed -n 's/^RECV \(INVITE\|UPDATE\) cseq=\([0-9]*\) .* m=\([0-9]*\) .*/\1\/\2:\3/p' | tr '\n' ' ')
        uac_saw=$(logs_of "uac_ru_$tr" | sed -n 's/^ANSWER \([^ ]*\) .* m=\([0-9]*\) .*/\1:\2/p' | tr '\n' ' ')
        want_uas="INVITE/1:$UAC_MP INVITE/2:$((UAC_MP + 2)) UPDATE/3:$UAC_MP "
        want_uac="INVITE:$UAS_MP re-INVITE:$((UAS_MP + 2)) UPDATE:$((UAS_MP + 2)) "
        if [ $rc -eq 0 ] && [ "$uas_saw" = "$want_uas" ] && [ "$uac_saw" = "$want_uac" ]; then
            ok "uac_reinvite_update <-> uas_reinvite_update over $tr: offers $uas_saw| answers $uac_saw"
        else
            fail "re-INVITE/UPDATE over $tr (uas exit $rc): offers '$uas_saw' (want '$want_uas'), answers '$uac_saw' (want '$want_uac')"
            why_sipp "uas_ru_$tr"; why_sipp "uac_ru_$tr"
        fi
    else
        fail "uac_reinvite_update over $tr"; why_sipp "uac_ru_$tr"; wait "$UAS_JOB"; why_sipp "uas_ru_$tr"
    fi
done

# ------------------------------------------------- 3. baresip B calls baresip A
A=$WORKDIR/bs-a B=$WORKDIR/bs-b
if "$BS/run.sh" "$A_P" "$A_CTRL" "$A" --auto-answer --user alice --rtp-ports "$A_RTP" >/dev/null 2>"$WORKDIR/run-a.err" \
   && "$BS/run.sh" "$B_P" "$B_CTRL" "$B" --user bob --freq 1000 --rtp-ports "$B_RTP" >/dev/null 2>"$WORKDIR/run-b.err"; then
    ok "baresip A (pid $(cat "$A/baresip.pid"), auto-answer) on $A_P ctrl $A_CTRL, B (pid $(cat "$B/baresip.pid")) on $B_P ctrl $B_CTRL"
    timeout 20 "$BS/ctrl.py" "$A_CTRL" --events --until CALL_CLOSED --timeout 15 > "$WORKDIR/a-events.json" 2>&1 &
    EV=$!
    sleep 0.3
    if timeout 15 "$BS/ctrl.py" "$B_CTRL" dial "sip:alice@127.0.0.1:$A_P" --wait CALL_ESTABLISHED --timeout 10 > "$WORKDIR/b-dial.out" 2>&1; then
        sleep 1
        timeout 10 "$BS/ctrl.py" "$B_CTRL" listcalls > "$WORKDIR/b-listcalls.out" 2>&1
        if timeout 10 "$BS/ctrl.py" "$B_CTRL" hangup --wait CALL_CLOSED --timeout 5 > "$WORKDIR/b-hangup.out" 2>&1; then :; else fail "hangup on B"; show "$WORKDIR/b-hangup.out"; fi
        wait "$EV"
        a_types=$(python3 -c 'import json,sys; print(" ".join(json.loads(l)["type"] for l in open(sys.argv[1]) if l.startswith("{")))' "$WORKDIR/a-events.json" 2>/dev/null)
        sleep 0.2
        read -r atx arx <<<"$(rtp_counts "$A/baresip.log")"
        if grep -q ESTABLISHED "$WORKDIR/b-listcalls.out" && [[ " $a_types " == *" CALL_ESTABLISHED "*" CALL_CLOSED "* ]] \
           && [ "${atx:-0}" -gt 20 ] && [ "${arx:-0}" -gt 20 ]; then
            ok "B dialled A: established on both (A's events: $a_types), A's RTP tx $atx rx $arx, B hung up"
        else
            fail "B -> A: A's events '$a_types', A's RTP '${atx:-} ${arx:-}'"
            show "$WORKDIR/b-dial.out"; show "$WORKDIR/b-listcalls.out"; show "$A/baresip.log" 30
        fi
    else
        fail "B dial A: no CALL_ESTABLISHED"; show "$WORKDIR/b-dial.out"; show "$B/baresip.log" 30; kill "$EV" 2>/dev/null; wait "$EV"
    fi

    # ------------------------------------ 4. SIPp calls the auto-answering A
    if sipp_fg uac_to_a -sn uac -s alice -p "$UAC_P" -mi 127.0.0.1 -mp "$UAC_MP" -rtp_echo -d 1500 "127.0.0.1:$A_P"; then
        sleep 0.2
        read -r atx arx <<<"$(rtp_counts "$A/baresip.log")"
        if [ "${arx:-0}" -gt 20 ]; then
            ok "sipp -sn uac -rtp_echo -> baresip A: answered, BYE 200; A got its tone echoed (RTP tx $atx rx $arx)"
        else
            fail "sipp -> A: A's RTP '${atx:-} ${arx:-}'"; show "$A/baresip.log" 30
        fi
    else
        fail "sipp -sn uac -> baresip A"; why_sipp uac_to_a; show "$A/baresip.log" 30
    fi

    # ------------------------------------------- 5. B calls SIPp's uas_echo
    (sipp_fg uas_echo_b -sf "$SCEN/uas_echo.xml" -p "$UAS_P" -mi 127.0.0.1 -mp "$UAS_MP" -rtp_echo) &
    UAS_JOB=$!
    if wait_sip_port "$UAS_P" && timeout 15 "$BS/ctrl.py" "$B_CTRL" dial "sip:echo@127.0.0.1:$UAS_P" --wait CALL_ESTABLISHED --timeout 10 > "$WORKDIR/b-dial2.out" 2>&1; then
        sleep 1.5
        timeout 10 "$BS/ctrl.py" "$B_CTRL" hangup --wait CALL_CLOSED --timeout 5 > /dev/null 2>&1
        wait "$UAS_JOB"; rc=$?
        sleep 0.2
        read -r btx brx <<<"$(rtp_counts "$B/baresip.log")"
        if [ $rc -eq 0 ] && [ "${brx:-0}" -gt 20 ]; then
            ok "baresip B -> uas_echo: answered ($(logs_of uas_echo_b | sed -n 's/^SENT 200 INVITE .*fmts=\([0-9 ]*\) .*/fmts \1/p')), B got its tone echoed (RTP tx $btx rx $brx), BYE 200"
        else
            fail "B -> uas_echo (sipp exit $rc, B's RTP '${btx:-} ${brx:-}')"; why_sipp uas_echo_b
        fi
    else
        fail "B -> uas_echo: not established"; show "$WORKDIR/b-dial2.out"; kill "$UAS_JOB" 2>/dev/null; wait "$UAS_JOB"
    fi
    if "$BS/stop.sh" "$A" && "$BS/stop.sh" "$B"; then ok "baresip A and B stopped"; else fail "stop.sh"; fi
else
    fail "baresip did not start"; show "$WORKDIR/run-a.err"; show "$WORKDIR/run-b.err"
fi

# ------------------------------------------- 6. registered, through Kamailio
A=$WORKDIR/bs-ka B=$WORKDIR/bs-kb
if "$KAM/run.sh" "$KAM_P" "$WORKDIR/kam" >/dev/null 2>"$WORKDIR/run-kam.err"; then
    if "$BS/run.sh" "$A_P" "$A_CTRL" "$A" --auto-answer --user alice --registrar "sip:127.0.0.1:$KAM_P" --password alicepw --rtp-ports "$A_RTP" >/dev/null 2>"$WORKDIR/run-ka.err" \
       && "$BS/run.sh" "$B_P" "$B_CTRL" "$B" --user bob --registrar "sip:127.0.0.1:$KAM_P" --password bobpw --rtp-ports "$B_RTP" >/dev/null 2>"$WORKDIR/run-kb.err"; then
        bound=
        for _ in $(seq 1 50); do
            a=$("$KAM/bindings.sh" "$WORKDIR/kam" alice 2>/dev/null); b=$("$KAM/bindings.sh" "$WORKDIR/kam" bob 2>/dev/null)
            [ -n "$a" ] && [ -n "$b" ] && { bound=1; break; }
            sleep 0.1
        done
        if [ -n "$bound" ]; then
            ok "alice and bob (baresip) registered with Kamailio: $a, $b"
            if timeout 15 "$BS/ctrl.py" "$B_CTRL" dial sip:alice@example.test --wait CALL_ESTABLISHED,CALL_CLOSED --timeout 10 > "$WORKDIR/kb-dial.out" 2>&1 \
               && grep -q '"CALL_ESTABLISHED"' "$WORKDIR/kb-dial.out"; then
                sleep 0.5
                timeout 10 "$BS/ctrl.py" "$B_CTRL" hangup --wait CALL_CLOSED --timeout 5 > /dev/null 2>&1
                if grep -aq '^Record-Route: <sip:127.0.0.1:'"$KAM_P"';lr>' "$B/baresip.log"; then
                    ok "bob called sip:alice@example.test through Kamailio (407 answered, record-routed), established, hung up"
                else
                    fail "call through Kamailio: no Record-Route seen"; show "$B/baresip.log" 30
                fi
            else
                fail "bob -> alice through Kamailio: not established"; show "$WORKDIR/kb-dial.out"; show "$WORKDIR/kam/kamailio.log"
            fi
        else
            fail "baresip registrations with Kamailio: alice '$a' bob '$b'"; show "$A/baresip.log" 30
        fi
        "$BS/stop.sh" "$A"; "$BS/stop.sh" "$B"
    else
        fail "baresip (with --registrar) did not start"; show "$WORKDIR/run-ka.err"; show "$WORKDIR/run-kb.err"
    fi
    "$KAM/stop.sh" "$WORKDIR/kam"
else
    fail "kamailio did not start"; show "$WORKDIR/run-kam.err"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
