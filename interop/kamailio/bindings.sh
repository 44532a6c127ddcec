#!/usr/bin/env bash
# Print the registered contacts of one AoR held by the Kamailio of WORKDIR,
# one contact a line (nothing if it has none).
#   interop/kamailio/bindings.sh WORKDIR AOR [FIELDS]
# AOR: alice@example.test, sip:alice@example.test or <sip:alice@example.test>
#      (a bare user name gets @KAM_DOMAIN of that run).
# FIELDS: comma-separated ul.lookup field names, printed tab-separated;
#      default Address. E.g. Address,Socket,Received,Instance,Reg-Id,Path,Expires
# Exit 0 with the list (possibly empty), 1 if Kamailio cannot be asked.
set -uo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then echo "usage: $0 WORKDIR AOR [FIELDS]" >&2; exit 2; fi
WORKDIR=$1
AOR=$2
FIELDS=${3:-Address}
# the socket as kamcmd must name it (see run.sh: a long WORKDIR gets a short one)
CTL=$(sed -n 's/^KAM_CTL=unix://p' "$WORKDIR/kamailio.env" 2>/dev/null)
CTL=${CTL:-$WORKDIR/ctl.sock}

AOR=${AOR#<}; AOR=${AOR%>}; AOR=${AOR#sip:}; AOR=${AOR#sips:}
AOR=${AOR%%;*}; AOR=${AOR%%\?*}
if [ "${AOR#*@}" = "$AOR" ]; then
    DOMAIN=$(sed -n 's/^KAM_DOMAIN=//p' "$WORKDIR/kamailio.env" 2>/dev/null)
    AOR="$AOR@${DOMAIN:-example.test}"
fi
AOR=${AOR%:[0-9]*}   # usrloc keys are user@domain, without a port

# kamcmd exits 0 even when the RPC fails: look at what it printed.
out=$(timeout 5 kamcmd -s "unix:$CTL" ul.lookup location "$AOR" 2>&1)
rc=$?
if [ $rc -ne 0 ]; then
    echo "bindings.sh: kamcmd failed (rc $rc): $out" >&2
    exit 1
fi
case $out in
    *"AOR not found"*) exit 0 ;;
    error:*) echo "bindings.sh: $out" >&2; exit 1 ;;
esac
printf '%s\n' "$out" | awk -v fields="$FIELDS" '
    BEGIN { n = split(fields, want, ",") }
    /^[ \t]*Contact: \{/ { inc = 1; delete v; next }
    inc && /^[ \t]*\}/ {
        line = ""
        for (i = 1; i <= n; i++) line = line (i > 1 ? "\t" : "") v[want[i]]
        print line
        inc = 0; next
    }
    inc {
        s = $0; sub(/^[ \t]+/, "", s)
        k = s; sub(/: .*$/, "", k); val = s; sub(/^[^:]*: /, "", val)
        v[k] = val
    }'
