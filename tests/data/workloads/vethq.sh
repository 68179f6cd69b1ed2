#!/bin/sh
# veth pairs with hundreds to thousands of queues, in a private namespace: each side's
# per-queue arrays (veth_alloc_queues' struct veth_rq array, alloc_netdev_mqs' tx and
# rx queue arrays) are kvzalloc()ed and reach megabytes; the pair is brought up and
# deleted.  Usage: vethq.sh [ROUNDS [SEED]]; deletes its namespace.
n=${1:-20}; s=${2:-1}; ns=pyvm-veth$$
ip netns add $ns || exit 1
trap 'ip netns del $ns 2>/dev/null' EXIT INT TERM
i=0; r=$s
while [ $i -lt $n ]; do
  r=$(( (r * 1103515245 + 12345) % 2147483648 )); q=$(( 64 << (r / 65536 % 7) ))   # 64..4096 (the most rtnetlink takes)
  ip -n $ns link add pvq$i numtxqueues $q numrxqueues $q type veth peer name pvr$i || break
  ip -n $ns link set pvq$i up; ip -n $ns link set pvr$i up
  [ $((i % 2)) -eq 1 ] && ip -n $ns link del pvq$((i - 1))
  i=$((i + 1))
done
