#!/bin/sh
# a minute of everything: the new workload kinds one after another and overlapping
# (zram, seccomp, socket rings, BPF ring buffers, per-CPU growth, containers, a loop
# file system, a build), for a `pyvmalloc capture OUT --duration 60` started just before.
# The programs sit next to this script.  Usage: busymix.sh [SEED]
s=${1:-1}; d=$(dirname "$0")
"$d/zram.sh" 8 & "$d/seccomp" 200 $s; wait
"$d/sockring" 120 $s & "$d/bpfring" 200 $s; wait
"$d/userns.sh" 30 & "$d/percpu" 10 40000 $s; wait
"$d/fsloop.sh" 4 & "$d/build.sh" 30; wait
sleep 5
"$d/zram.sh" 6 1024 & "$d/threads" 40 60 $s; wait
