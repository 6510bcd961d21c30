# Sourced by test.sh: starts dockerd and a throw-away PostgreSQL cluster for the tests.
start_services() {
    if command -v dockerd >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && ! docker info >/dev/null 2>&1; then
        (dockerd >/tmp/evalbot-dockerd.log 2>&1 &)
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || echo "services: dockerd did not start (see /tmp/evalbot-dockerd.log)" >&2
    fi
    local pgbin
    pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$pgbin" ] && [ -z "${EVALBOT_TEST_POSTGRES_URL:-}" ] && [ "$(id -u)" = 0 ]; then
        local pgdata=/tmp/evalbot-pg
        if [ ! -d "$pgdata" ]; then
            install -d -o postgres "$pgdata"
            su postgres -c "$pgbin/initdb -D $pgdata -A trust -U postgres" >/dev/null
        fi
        if ! su postgres -c "$pgbin/pg_ctl -D $pgdata status" >/dev/null 2>&1; then
            su postgres -c "$pgbin/pg_ctl -D $pgdata -o '-p 55432 -k /tmp -c listen_addresses=127.0.0.1' -l /tmp/evalbot-pg.log start -w" >/dev/null
        fi
        export EVALBOT_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:55432/postgres"
    fi
}
