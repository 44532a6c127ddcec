#!/usr/bin/env bash
# Install what the interop tests need, on Debian 12, as root. Idempotent:
# packages already installed are skipped quietly (no apt-get update either
# when nothing is missing).
#
#   kamailio                   kamailio 5.6, kamcmd, and the modules used here
#                              (tm sl rr path usrloc registrar auth htable
#                              db_text ctl stun pv textops siputils sanity …)
#   kamailio-outbound-modules  outbound.so (RFC 5626)
#   sip-tester                 sipp 3.6.1
#   iproute2                   ss (check.sh looks for free ports)
#   baresip, baresip-core      baresip 1.0.0, a softphone, used headless only
#                              (`baresip` is a metapackage that depends on
#                              `baresip-core`; with --no-install-recommends it
#                              pulls no GTK/X11/gstreamer/ffmpeg modules).
#                              Modules used: ctrl_tcp menu ausine aubridge sndfile
#                              g711 account uuid contact (in baresip-core).
#   python3                    interop/baresip/ctrl.py (stdlib only)
#   nftables                   nft: packet loss and silent drops in the namespace
#                              fault tests (this kernel has no netem), NAT
#                              (masquerade) in the outbound namespace test
#   conntrack                  conntrack -F: flush a NAT's mappings (the
#                              outbound namespace test)
#   tcpdump                    captures with kernel timestamps (the outbound
#                              namespace test times the keep-alives on the wire)
#   redis-server               a shared location store for two registrar
#                              processes (siproam-cli/tests/redis_store.rs starts
#                              its own on a free loopback port; the packaged
#                              service is not used)
#
# The Debian kamailio package ships a service (init script, systemd unit)
# that must not start here (it would listen on every address, port 5060):
# the init script only starts with RUN_KAMAILIO=yes in /etc/default/kamailio,
# and while installing, a policy-rc.d that refuses service starts is put in
# place if there is none.
set -euo pipefail

PKGS=(kamailio kamailio-outbound-modules sip-tester iproute2 baresip baresip-core python3 nftables conntrack tcpdump redis-server)

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
    if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    POLICY=/usr/sbin/policy-rc.d
    made_policy=
    if [ ! -e "$POLICY" ]; then
        printf '#!/bin/sh\n# temporary, from siproam interop/install.sh\nexit 101\n' > "$POLICY"
        chmod 755 "$POLICY"
        made_policy=1
        trap 'rm -f "$POLICY"' EXIT
    fi
    timeout 600 apt-get -q -o DPkg::Lock::Timeout=120 update
    timeout 1200 apt-get -q -o DPkg::Lock::Timeout=120 install -y --no-install-recommends "${missing[@]}"
    if [ -n "$made_policy" ]; then rm -f "$POLICY"; trap - EXIT; fi
fi

# What the scripts rely on, checked every time.
fail=0
for b in kamailio kamcmd sipp ss timeout setsid baresip python3 nft conntrack tcpdump redis-server; do
    command -v "$b" >/dev/null || { echo "install.sh: '$b' missing after install" >&2; fail=1; }
done
MODDIR=$(kamailio -I 2>/dev/null | sed -n "s/^ *Default paths to modules: *//p" | head -n1)
MODDIR=${MODDIR:-/usr/lib/x86_64-linux-gnu/kamailio/modules}
for m in outbound path rr stun usrloc registrar auth htable db_text ctl; do
    ls "$MODDIR/$m.so" >/dev/null 2>&1 || ls /usr/lib/*/kamailio/modules/"$m.so" >/dev/null 2>&1 \
        || { echo "install.sh: kamailio module $m.so missing" >&2; fail=1; }
done
BMODDIR=
for d in /usr/lib/baresip/modules /usr/lib/*/baresip/modules /usr/local/lib/baresip/modules; do
    [ -e "$d/ctrl_tcp.so" ] && { BMODDIR=$d; break; }
done
if [ -z "$BMODDIR" ]; then
    echo "install.sh: baresip modules (ctrl_tcp.so) not found" >&2; fail=1
else
    for m in ctrl_tcp menu ausine aubridge sndfile g711 account uuid contact; do
        [ -e "$BMODDIR/$m.so" ] || { echo "install.sh: baresip module $m.so missing in $BMODDIR" >&2; fail=1; }
    done
fi
[ "$fail" -eq 0 ] || exit 1
[ ${#missing[@]} -gt 0 ] && echo "install.sh: done ($(kamailio -v 2>/dev/null | head -n1); $(sipp -v 2>/dev/null | grep -o 'v[0-9][0-9.]*' | head -n1); baresip $(dpkg-query -W -f='${Version}' baresip-core 2>/dev/null))"
exit 0
