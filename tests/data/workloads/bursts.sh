#!/bin/sh
# A mostly idle machine with periodic jobs, like cron on a server: 1-4 s of sleep, then a
# short burst of one of the programs next to this script (a thread pool, seccomp filters,
# BPF programs, BPF ring buffers) or of forks (`sh -c true` in a loop), sometimes two at
# once.  Build the C programs with cc first.  Usage: bursts.sh [ROUNDS [SEED]]
n=${1:-12}; s=${2:-1}; d=$(dirname "$0")
i=0
while [ $i -lt $n ]; do
  r=$(awk -v seed=$((s * 1000 + i)) 'BEGIN { srand(seed); printf "%d %d %d", 1 + int(rand() * 4), int(rand() * 6), int(rand() * 6) }')
  set -- $r
  sleep $1
  for k in $2 $3; do
    case $k in
      0) "$d/threads" 3 40 $((s + i)) & ;;
      1) "$d/seccomp" 20 $((s + i)) & ;;
      2) "$d/bpfprog" 20 $((s + i)) 2>/dev/null & ;;
      3) "$d/bpfring" 20 $((s + i)) & ;;
      4) j=0; while [ $j -lt 40 ]; do sh -c true; j=$((j + 1)); done & ;;
      *) ;;
    esac
  done
  wait
  i=$((i + 1))
done
