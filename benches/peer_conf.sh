# shellcheck shell=bash
# benches/peer_conf.sh - the configuration writers of peer balancers that bench.sh and the
# scripts under benches/ use (sourced by each, so that a peer is configured one way).

# write_haproxy_conf FILE MODE OPTIONS TIMEOUTS PORT BIND-OPTS BE1 BE2 SERVER-OPTS: FILE for
# HAProxy (one thread) in MODE (http or tcp) on PORT, round robin over the backends on ports BE1
# and BE2. OPTIONS and TIMEOUTS are lines of the defaults section (`;`-separated, may be empty)
# before and after its connect, client and server timeouts; BIND-OPTS and SERVER-OPTS go on the
# end of the bind line and of each server line (each empty or starting with a space).
write_haproxy_conf() {
    local file=$1 mode=$2 options=$3 timeouts=$4 port=$5 bind_opts=$6 be1=$7 be2=$8 server_opts=$9
    local IFS=';' line
    {
        printf 'global\n    nbthread 1\n    maxconn 4096\n\ndefaults\n    mode %s\n' "$mode"
        for line in $options; do printf '    %s\n' "$line"; done
        printf '    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n'
        for line in $timeouts; do printf '    %s\n' "$line"; done
        cat <<EOF

frontend fe
    bind 127.0.0.1:$port$bind_opts
    default_backend be

backend be
    balance roundrobin
    server b1 127.0.0.1:$be1$server_opts
    server b2 127.0.0.1:$be2$server_opts
EOF
    } >"$file"
}

# write_haproxy_h2_conf DIR PORT BE1 BE2: DIR/haproxy.cfg for HAProxy as an HTTP/2 proxy
# (`proto h2` on both sides, one thread, round robin) on PORT in front of the h2c backends on
# ports BE1 and BE2. Used by bench.sh's grpc suite and http suite's h2c workload, and by
# benches/callgrind_lib.sh's gRPC harness (benches/grpc_instructions.sh, grpc_syscalls.sh).
write_haproxy_h2_conf() {
    mkdir -p "$1"
    write_haproxy_conf "$1/haproxy.cfg" http "http-reuse always" "" "$2" " proto h2" "$3" "$4" \
        " proto h2"
}
