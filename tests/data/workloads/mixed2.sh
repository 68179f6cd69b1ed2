#!/bin/sh
# the new kinds at once: zram devices, seccomp filters, BPF ring buffers and arenas,
# per-CPU chunk growth and a thread pool, all concurrent (the programs sit next to
# this script; build them with cc first).  Usage: mixed2.sh [SEED]
s=${1:-1}; d=$(dirname "$0")
"$d/zram.sh" 12 & "$d/seccomp" 150 $s & "$d/bpfring" 200 $s & "$d/percpu" 10 40000 $s &
"$d/threads" 30 60 $s
wait
