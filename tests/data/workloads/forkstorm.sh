#!/bin/sh
# fork/exec storm: many short processes, some pipelines and subshells
i=0; n=${1:-1500}
while [ $i -lt $n ]; do /bin/true; (echo x | cat >/dev/null); i=$((i+1)); done
