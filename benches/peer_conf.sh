# shellcheck shell=bash
# benches/peer_conf.sh - the configuration writers of peer balancers that bench.sh and the
# scripts under benches/ both use (sourced by each, so that a peer is configured one way).

# write_haproxy_h2_conf DIR PORT BE1 BE2: DIR/haproxy.cfg for HAProxy as an HTTP/2 proxy
# (`proto h2` on both sides, one thread, round robin) on PORT in front of the h2c backends on
# ports BE1 and BE2. Used by bench.sh's grpc suite and http suite's h2c workload, and by
# benches/grpc_instructions.sh.
write_haproxy_h2_conf() {
    local dir=$1 port=$2 be1=$3 be2=$4
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096

defaults
    mode http
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:$port proto h2
    default_backend be

backend be
    balance roundrobin
    server b1 127.0.0.1:$be1 proto h2
    server b2 127.0.0.1:$be2 proto h2
EOF
}
