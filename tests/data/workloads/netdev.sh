#!/bin/sh
# network devices: bridges, multi-queue taps, vxlan and macvlan links, added, set up,
# enslaved and deleted (alloc_netdev_mqs kvzalloc()s the device and its queues).
# Usage: netdev.sh [ROUNDS]; deletes every device it creates.
n=${1:-20}; i=0
while [ $i -lt $n ]; do
  ip link add pvbr$i type bridge
  ip tuntap add dev pvtap$i mode tap multi_queue
  ip link set pvtap$i master pvbr$i
  ip link add pvvx$i type vxlan id $((100 + i)) dstport 4789 local 127.0.0.1
  ip link add link pvbr$i name pvmv$i type macvlan mode bridge
  ip link set pvbr$i up; ip link set pvvx$i up; ip link set pvmv$i up
  if [ $((i % 2)) -eq 1 ]; then
    j=$((i - 1)); ip link del pvmv$j; ip link del pvvx$j; ip link del pvtap$j; ip link del pvbr$j
  fi
  i=$((i+1))
done
i=0; while [ $i -lt $n ]; do
  for d in pvmv$i pvvx$i pvtap$i pvbr$i; do ip link del $d 2>/dev/null; done; i=$((i+1))
done
