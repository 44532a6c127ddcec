#!/usr/bin/env bash
# The hand-off test network, in namespaces (root; iproute2):
#
#   topology.sh up TAG     creates srhTAG (handset), srrTAG (router), srsTAG (server)
#   topology.sh down TAG   removes them
#
#   handset wifi0 10.1.0.2/24 fd01::2/64 -- router rwifi 10.1.0.1 fd01::1
#   handset cell0 10.2.0.2/24 fd02::2/64 -- router rcell 10.2.0.1 fd02::1
#   server  srv0  10.9.0.2/24 fd09::2/64 -- router rsrv  10.9.0.1 fd09::1
#
# The handset's default routes go over wifi (metric 100) and cell (200);
# source rules (one table per uplink) keep a socket bound to an uplink's
# address on that uplink. The router forwards and has no default route, so
# no packet leaves the machine. IPv6 addresses are `nodad`, and every IPv6
# neighbour is static: some sandboxed network stacks take about a second to
# resolve a neighbour on a forwarded path.
set -euo pipefail

cmd=${1:?up or down}
tag=${2:?tag}
H=srh$tag R=srr$tag S=srs$tag

if [ "$cmd" = down ]; then
    for ns in "$H" "$R" "$S"; do ip netns del "$ns" 2>/dev/null || true; done
    exit 0
fi
[ "$cmd" = up ] || { echo "usage: $0 up|down TAG" >&2; exit 2; }

sys() { ip netns exec "$1" sh -c "echo $3 > /proc/sys/$2"; }
mac() { ip netns exec "$1" cat "/sys/class/net/$2/address"; }

for ns in "$H" "$R" "$S"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    sys "$ns" net/ipv6/conf/all/accept_ra 0
    sys "$ns" net/ipv4/conf/all/rp_filter 0
    sys "$ns" net/ipv4/conf/default/rp_filter 0
done
sys "$R" net/ipv4/ip_forward 1
sys "$R" net/ipv6/conf/all/forwarding 1

link() { # NS DEV ROUTER-PEER N
    local ns=$1 dev=$2 peer=$3 n=$4
    ip -n "$ns" link add "$dev" type veth peer name "$peer" netns "$R"
    ip -n "$ns" addr add "10.$n.0.2/24" dev "$dev"
    ip -n "$ns" addr add "fd0$n::2/64" dev "$dev" nodad
    ip -n "$R" addr add "10.$n.0.1/24" dev "$peer"
    ip -n "$R" addr add "fd0$n::1/64" dev "$peer" nodad
    ip -n "$ns" link set "$dev" up
    ip -n "$R" link set "$peer" up
    ip -n "$ns" -6 neigh replace "fd0$n::1" lladdr "$(mac "$R" "$peer")" dev "$dev" nud permanent
    ip -n "$R" -6 neigh replace "fd0$n::2" lladdr "$(mac "$ns" "$dev")" dev "$peer" nud permanent
}
link "$H" wifi0 rwifi 1
link "$H" cell0 rcell 2
link "$S" srv0 rsrv 9
sys "$H" net/ipv4/conf/wifi0/promote_secondaries 1

ip -n "$S" route add default via 10.9.0.1
ip -n "$S" -6 route add default via fd09::1
for spec in "wifi0 1 100 101" "cell0 2 200 102"; do
    set -- $spec
    ip -n "$H" route add default via "10.$2.0.1" dev "$1" metric "$3"
    ip -n "$H" route add default via "10.$2.0.1" dev "$1" table "$4"
    ip -n "$H" rule add from "10.$2.0.2" table "$4"
    ip -n "$H" -6 route add default via "fd0$2::1" dev "$1" metric "$3"
done
