#!/bin/sh
# Director health-check load benchmark: N HTTP real servers on 127.0.0.1 (ports 20000..),
# each checked every second through CheckScheduler + the real Checker (HTTP keep-alive on;
# HBD_BENCH_KEEPALIVE=0 opens a connection per check), for HBD_BENCH_SECS seconds.
# Prints CPU % of one core (utime+stime from /proc/self/stat), peak VmRSS, checks/s,
# per-real check counts, failures and the scheduler's max lateness. The HTTP server runs in
# a separate process, so the figures are the checker's alone.
#
# Usage: scripts/bench-checks.sh            (5000 reals, 20 s, 256 concurrent checks)
#        HBD_BENCH_REALS=1000 HBD_BENCH_SECS=10 HBD_BENCH_CONCURRENCY=64 scripts/bench-checks.sh
#        HBD_BENCH_KEEPALIVE=0 scripts/bench-checks.sh   (a fresh connection per check)
# Targets (issue "Director"): <= 25 % of one core, <= 50 MB RSS, every real once per interval.
set -eu
cd "$(dirname "$0")/.."
# The server needs a descriptor per listening port and per kept connection; the checker one
# per kept connection plus its reserve (checks::FD_RESERVE, 1024) for in-flight checks.
need=$(( 2 * ${HBD_BENCH_REALS:-5000} + 1024 ))
[ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" || {
    echo "ulimit -n must be at least $need" >&2; exit 1; }
exec cargo test --release --test e2e -- --ignored --exact checks::bench_http_checks \
    --nocapture --test-threads=1
