#!/bin/sh
# something else drops caches in the middle of a capture (a monitoring job, another
# capture): a thread pool, then `echo 2 > /proc/sys/vm/drop_caches` (the vmap-node
# shrinker empties every pool back into the free tree, with no trace event), then the
# thread pool again.  The `threads` program sits next to this script.
# Usage: dropmid.sh [SEED [ROUNDS]] (ROUNDS of the pool on each side, default 30; about 100
# make the kernel purge, and so fill the pools, before the drop)
s=${1:-1}; r=${2:-30}; d=$(dirname "$0")
"$d/threads" $r 80 $s
echo 2 > /proc/sys/vm/drop_caches
"$d/threads" $r 80 $((s + 1))
