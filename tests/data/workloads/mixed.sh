#!/bin/sh
# threads + BPF programs + fork storm + BPF maps concurrently
D=$(dirname "$0")
$D/threads 40 80 ${1:-5} & a=$!
$D/bpfprog 300 ${1:-5} & b=$!
$D/forkstorm.sh 300 & c=$!
${PYTHON:-python3} -m pyvmalloc.trace.bpfload --seed ${1:-5} --profile mixed --churn-mb 80 >/dev/null
wait $a $b $c
