#!/bin/sh
# containers: user + mount + pid (+ uts, ipc) namespaces with unshare, a private /proc,
# a few processes inside; each namespace set goes away with its last process.
# Usage: userns.sh [ROUNDS]
n=${1:-40}; i=0
while [ $i -lt $n ]; do
  unshare -Urmpfui --mount-proc /bin/sh -c 'hostname c; ls /proc >/dev/null; (sleep 0.01 &); cat /proc/self/status >/dev/null; wait'
  i=$((i+1))
done
