#!/bin/sh
# container-host churn: memory and pids cgroups (v1 hierarchies under /sys/fs/cgroup)
# created in batches, a short process run in each, then removed; a memory cgroup's
# per-CPU statistics come from the per-CPU allocator, which grows by chunks.
# Usage: cgroups.sh [ROUNDS [PER_ROUND]]; removes every cgroup it creates.
n=${1:-10}; k=${2:-30}; i=0
base=/sys/fs/cgroup/memory/pyvm-cg; pbase=/sys/fs/cgroup/pids/pyvm-cg
mkdir -p $base $pbase || exit 1
while [ $i -lt $n ]; do
  j=0
  while [ $j -lt $k ]; do
    mkdir $base/c$j $pbase/c$j
    if [ $((j % 5)) -eq 0 ]; then
      sh -c "echo \$\$ > $base/c$j/cgroup.procs; echo \$\$ > $pbase/c$j/cgroup.procs; true"
    fi
    j=$((j+1))
  done
  j=0; while [ $j -lt $k ]; do rmdir $base/c$j $pbase/c$j; j=$((j+1)); done
  i=$((i+1))
done
rmdir $base $pbase
