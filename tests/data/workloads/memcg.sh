#!/bin/sh
# Many memory cgroups alive at once (v1 hierarchy): every memcg's per-CPU statistics come
# from the per-CPU allocator, so its chunks fill and new ones are created (chunk metadata
# is vmalloc'ed; the chunk's own areas come from pcpu_get_vm_areas, whose allocation has no
# tracepoint) and freed again by pcpu_balance_workfn after the cgroups go.
# Usage: memcg.sh [ROUNDS [PER_ROUND]]; removes every cgroup it creates.
n=${1:-3}; k=${2:-600}; base=/sys/fs/cgroup/memory/pyvm-mc$$
mkdir $base || exit 1
trap 'for d in $base/c*; do rmdir $d 2>/dev/null; done; rmdir $base' EXIT INT TERM
i=0
while [ $i -lt $n ]; do
  j=0; while [ $j -lt $k ]; do mkdir $base/c$j; j=$((j + 1)); done
  sh -c "echo \$\$ > $base/c1/cgroup.procs; /bin/true"
  j=0; while [ $j -lt $k ]; do rmdir $base/c$j; j=$((j + 1)); done
  sleep 1; i=$((i + 1))
done
