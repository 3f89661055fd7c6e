#!/usr/bin/env bash
# Builds the multi-host lab: one network namespace per node, all joined by veth pairs to a
# bridge that lives in its own namespace (the root namespace's networking is not touched).
# Idempotent: re-running rebuilds the lab from scratch.
#   tools/lab-up.sh [clients=3] [control_units=2]
# Nodes and addresses (10.77.0.0/24): ss-cu1 .1, ss-cu2 .2 (.. ss-cuN .N), ss-cl1.. .11..,
# ss-lg .100 (load).
set -euo pipefail
CLIENTS=${1:-3}
CUS=${2:-2}
"$(dirname "$0")/lab-down.sh" >/dev/null 2>&1 || true
ip netns add ss-hub
ip netns exec ss-hub ip link add br0 type bridge
ip netns exec ss-hub ip link set br0 up
ip netns exec ss-hub ip link set lo up
add_node() { # name address-suffix
  local ns=$1 host=$2 peer="h-$1"
  ip netns add "$ns"
  ip link add "v-$ns" type veth peer name "$peer"
  ip link set "v-$ns" netns "$ns"
  ip link set "$peer" netns ss-hub
  ip netns exec ss-hub ip link set "$peer" master br0 up
  ip netns exec "$ns" ip link set "v-$ns" name eth0
  ip netns exec "$ns" ip addr add "10.77.0.$host/24" dev eth0
  ip netns exec "$ns" ip link set eth0 up
  ip netns exec "$ns" ip link set lo up
}
for i in $(seq 1 "$CUS"); do add_node "ss-cu$i" "$i"; done
for i in $(seq 1 "$CLIENTS"); do add_node "ss-cl$i" $((10 + i)); done
add_node ss-lg 100
echo "lab up: ss-cu1..ss-cu$CUS 10.77.0.1.., ss-cl1..ss-cl$CLIENTS 10.77.0.11.., ss-lg 10.77.0.100"
