#!/bin/sh
# The long-lived connection's server (nc -ll -e): answers each line with the real's name.
while read -r line; do echo "$NAME $line"; done
