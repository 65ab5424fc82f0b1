#!/bin/sh
# Director health-check load benchmark: N HTTP real servers on 127.0.0.1 (ports 20000..),
# each checked every second through CheckScheduler + reqwest, for HBD_BENCH_SECS seconds.
# Prints CPU % of one core (utime+stime from /proc/self/stat), peak VmRSS, checks/s,
# per-real check counts, failures and the scheduler's max lateness. The HTTP server runs in
# a separate process, so the figures are the checker's alone.
#
# Usage: scripts/bench-checks.sh            (5000 reals, 20 s, 256 concurrent checks)
#        HBD_BENCH_REALS=1000 HBD_BENCH_SECS=10 HBD_BENCH_CONCURRENCY=64 scripts/bench-checks.sh
# Targets (issue "Director"): <= 25 % of one core, <= 50 MB RSS, every real once per interval.
set -eu
cd "$(dirname "$0")/.."
# Each process needs one descriptor per listening port / concurrent check, plus slack.
need=$(( ${HBD_BENCH_REALS:-5000} + 1024 ))
[ "$(ulimit -n)" -ge "$need" ] || ulimit -n "$need" || {
    echo "ulimit -n must be at least $need" >&2; exit 1; }
exec cargo test --release --test e2e -- --ignored --exact checks::bench_http_checks \
    --nocapture --test-threads=1
