#!/bin/sh
# spread.sh VIP N: N HTTP/1.0 requests to VIP:80, each a new connection (busybox's static
# wget crashes; nc does not); prints "name=count " per real that answered, sorted by name,
# "failed=count" for requests with no answer. Run inside the client's namespace, so the
# namespace is entered once for all N.
for i in $(seq "$2"); do
  r=$(printf 'GET /index.html HTTP/1.0\r\n\r\n' | nc -w 2 "$1" 80 | tail -n 1)
  echo "${r:-failed}"
done | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}'
