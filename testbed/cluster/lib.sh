# shellcheck shell=bash disable=SC2034  # the settings are used by up and down
# Shared settings and helpers of testbed/cluster/up and testbed/cluster/down.
# Sourced, not executed. Every setting can be overridden from the environment.

CLUSTER_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$CLUSTER_SRC/../.." && pwd)

STATE=$(realpath -m -- "${PRIVATIZE_CLUSTER_DIR:-$REPO/target/cluster}")
TESTBED_DIR=$(realpath -m -- "${PRIVATIZE_TESTBED_DIR:-$REPO/target/testbed}")
API_PORT=${CLUSTER_API_PORT:-18443}
ETCD_PORT=${CLUSTER_ETCD_PORT:-18379}
ETCD_PEER_PORT=${CLUSTER_ETCD_PEER_PORT:-18380}
KUBELET_PORT=${CLUSTER_KUBELET_PORT:-18250}
KUBELET_HEALTHZ_PORT=${CLUSTER_KUBELET_HEALTHZ_PORT:-18248}
KCM_PORT=${CLUSTER_KCM_PORT:-18257}
SCHEDULER_PORT=${CLUSTER_SCHEDULER_PORT:-18259}
PROXY_HEALTHZ_PORT=${CLUSTER_PROXY_HEALTHZ_PORT:-18256}
PROXY_METRICS_PORT=${CLUSTER_PROXY_METRICS_PORT:-18249}
SOURCE_PORT=${SOURCE_PORT:-15000}
TARGET_PORT=${TARGET_PORT:-15443}
MOTO_PORT=${MOTO_PORT:-15500}
NODE_NAME=privatize-node
BRIDGE=${CLUSTER_BRIDGE:-privnode0}
POD_CIDR=198.18.0.0/24
# The bridge holds the pod subnet's gateway address, so the host routes the
# subnet to the bridge (never out through its default route).
BRIDGE_GW=198.18.0.1
# The cluster apiserver's Service CIDR: routed to the bridge as well.
SERVICE_CIDR=198.19.0.0/24
# The testbed's own nft table: nothing is forwarded between the bridge and
# another interface, and nothing to a pod or Service address leaves through
# another interface.
NFT_TABLE=privatize_node
# kube-proxy's own nft tables (nftables mode): down deletes them.
PROXY_TABLES=("ip kube-proxy" "ip6 kube-proxy")
# Ports on 127.0.0.1 that the bridge address forwards to (socat), so pods
# reach them under the name the node pulls by: the source and target
# registries, moto (the ECR API) and the apiserver (the `kubernetes`
# Service's endpoint is the bridge address).
FORWARD_PORTS=("$SOURCE_PORT" "$TARGET_PORT" "$MOTO_PORT" "$API_PORT")
SOCAT=/usr/bin/socat

RUN=$STATE/run     # PID files, sockets
LOGS=$STATE/logs
HOST=$STATE/host   # what the host looked like before the first start (down restores it)
CONTAINERD=/usr/bin/containerd

# Paths the kubelet, containerd and libcni create outside $STATE (hard-coded
# in them). down removes those that did not exist before the first start.
HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd
  /run/mount /usr/libexec/kubernetes)
# Sysctls the kubelet sets (setupKernelTunables), those kube-proxy may set
# (conntrack, route_localnet; it runs with the settings that leave them
# alone) and, defensively, forwarding.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait
  net.netfilter.nf_conntrack_tcp_be_liberal)

log() { echo "cluster/$CLUSTER_CMD: $*" >&2; }
die() { log "$*"; exit 1; }

# running PID: exists and is not a zombie.
running() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# pid_alive NAME BINARY: prints the PID in $RUN/NAME.pid if it runs BINARY
# (guards against PID reuse).
pid_alive() {
  local pid
  [ -f "$RUN/$1.pid" ] || return 1
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && running "$pid" || return 1
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$2")" ] || return 1
  echo "$pid"
}

# stop NAME BINARY: TERM the PID of $RUN/NAME.pid if it still runs BINARY,
# wait up to 10 s, then KILL. Removes the PID file either way.
stop() {
  local name=$1 bin=$2 pid
  if pid=$(pid_alive "$name" "$bin"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then
      log "$name (PID $pid) still running after 10 s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
    fi
    log "stopped $name (PID $pid)"
  fi
  rm -f "$RUN/$name.pid" "$RUN/$name.spec"
}

# mounts_under DIR: mount points at or below DIR, deepest first.
mounts_under() {
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}
