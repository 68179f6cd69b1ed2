#!/bin/sh
# BPF maps under background process churn
( i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i+1)); done ) & bg=$!
${PYTHON:-python3} -m pyvmalloc.trace.bpfload --seed ${1:-31} --profile ${2:-mixed} --churn-mb ${3:-120}
kill $bg 2>/dev/null; wait
