#!/bin/sh
# network namespaces with a veth pair and a loopback up in each, created and deleted
n=${1:-40}; i=0
while [ $i -lt $n ]; do
  ip netns add pyvm$i && ip -n pyvm$i link set lo up && ip link add pv$i type veth peer name pvp$i netns pyvm$i
  unshare -n /bin/true
  if [ $((i % 3)) -eq 2 ]; then ip netns del pyvm$((i-1)); fi
  i=$((i+1))
done
i=0; while [ $i -lt $n ]; do ip netns del pyvm$i 2>/dev/null; ip link del pv$i 2>/dev/null; i=$((i+1)); done
