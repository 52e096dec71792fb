#!/usr/bin/env bash
# deploy.sh - the compose stack on a laptop (docker-compose.yml): Fulcrum, three HTTP demo
# backends, two gRPC demo backends.
#
#   ./deploy.sh up       build the images, start everything, return once all are healthy
#   ./deploy.sh down     stop and remove the containers (add -v to drop the state volume too)
#   ./deploy.sh logs     follow the logs (extra arguments go to `logs`, e.g. a service name)
#   ./deploy.sh token    print an admin token (fulcrum:read fulcrum:write, one hour)
#   ./deploy.sh status   print /api/v1/config (backends, algorithm, drivers, ...)
#   ./deploy.sh store    print /api/v1/store of every instance that runs (COMPOSE_PROFILES=cluster:
#                        etcd and three more instances sharing one configuration, docs/store.md)
#
# Needs Docker with the compose plugin (`docker compose`) or the standalone `docker-compose`.
# The first `up` writes .env from .env.example with a fresh random FULCRUM_JWT_SECRET.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

die() { printf 'deploy.sh: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    elif command -v docker-compose >/dev/null 2>&1; then
        docker-compose "$@"
    else
        die "needs Docker Compose: the 'docker compose' plugin or 'docker-compose'"
    fi
}

# The value of KEY in .env, else DEFAULT.
env_value() {
    local v=""
    [[ -f .env ]] && v=$(sed -n "s/^$1=//p" .env | tail -n 1)
    printf '%s' "${v:-$2}"
}

ensure_env() {
    [[ -f .env ]] && return 0
    local secret
    secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    [[ ${#secret} -eq 64 ]] || die "could not read 32 random bytes"
    sed "s/^FULCRUM_JWT_SECRET=.*/FULCRUM_JWT_SECRET=$secret/" .env.example >.env
    chmod 600 .env
    printf 'deploy.sh: wrote .env with a random FULCRUM_JWT_SECRET\n' >&2
}

token() {
    compose exec -T fulcrum fulcrum token --scope "fulcrum:read fulcrum:write" --ttl 1h
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case $cmd in
    up)
        ensure_env
        if docker compose version >/dev/null 2>&1; then
            # --wait: returns when every service is healthy (or fails when one is not).
            DOCKER_BUILDKIT=1 docker compose up -d --build --wait "$@"
        else
            DOCKER_BUILDKIT=1 compose up -d --build "$@"
            # docker-compose v1 has no --wait: poll Fulcrum's health (readiness) for 2 minutes.
            for _ in $(seq 1 120); do
                state=$(docker inspect -f '{{.State.Health.Status}}' "$(compose ps -q fulcrum)" 2>/dev/null || true)
                [[ $state == healthy ]] && break
                [[ $state == unhealthy ]] && die "fulcrum is unhealthy: ./deploy.sh logs fulcrum"
                sleep 1
            done
            [[ ${state:-} == healthy ]] || die "fulcrum not healthy after 2 minutes: ./deploy.sh logs fulcrum"
        fi
        printf 'data plane: http://127.0.0.1:%s/   admin: http://127.0.0.1:%s/docs\n' \
            "$(env_value FULCRUM_HTTP_PORT 8080)" "$(env_value FULCRUM_ADMIN_PORT 9090)"
        if [[ ,${COMPOSE_PROFILES:-}, == *,cluster,* ]]; then
            for n in 1 2 3; do
                printf 'fulcrum-%s:  data plane: http://127.0.0.1:%s/   admin: http://127.0.0.1:%s/docs\n' "$n" \
                    "$(env_value "FULCRUM_CLUSTER_HTTP_PORT_$n" "808$n")" \
                    "$(env_value "FULCRUM_CLUSTER_ADMIN_PORT_$n" "909$n")"
            done
        fi
        ;;
    down)
        compose down "$@"
        ;;
    logs)
        compose logs -f "$@"
        ;;
    token)
        token
        ;;
    status)
        command -v curl >/dev/null 2>&1 || die "status needs curl"
        tok=$(token) || die "could not mint a token (is the stack up? ./deploy.sh up)"
        out=$(curl -fsS -H "Authorization: Bearer $tok" \
            "http://127.0.0.1:$(env_value FULCRUM_ADMIN_PORT 9090)/api/v1/config")
        if command -v python3 >/dev/null 2>&1; then
            python3 -m json.tool <<<"$out"
        else
            printf '%s\n' "$out"
        fi
        ;;
    store)
        command -v curl >/dev/null 2>&1 || die "store needs curl"
        tok=$(token) || die "could not mint a token (is the stack up? ./deploy.sh up)"
        for port in "$(env_value FULCRUM_ADMIN_PORT 9090)" \
            "$(env_value FULCRUM_CLUSTER_ADMIN_PORT_1 9091)" \
            "$(env_value FULCRUM_CLUSTER_ADMIN_PORT_2 9092)" \
            "$(env_value FULCRUM_CLUSTER_ADMIN_PORT_3 9093)"; do
            out=$(curl -fsS -H "Authorization: Bearer $tok" \
                "http://127.0.0.1:$port/api/v1/store" 2>/dev/null) || continue
            printf '== admin port %s\n' "$port"
            if command -v python3 >/dev/null 2>&1; then
                python3 -m json.tool <<<"$out"
            else
                printf '%s\n' "$out"
            fi
        done
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac
