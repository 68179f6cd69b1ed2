#!/bin/sh
# zram block devices: hot_add a device, give it a disk size (the kernel vzalloc()s the
# per-page table and per-CPU compression buffers), write to it, use it as swap for a
# moment (swapon vzalloc()s swap_map), then swapoff, reset and hot_remove it.
# Usage: zram.sh [ROUNDS [STEP_MB]] (disk sizes 1-4 x STEP_MB, default 32); leaves no zram
# device or swap behind.
n=${1:-10}; step=${2:-32}; i=0
ctl=/sys/class/zram-control; id=""
cleanup() {  # also on Ctrl-C or a kill: no swap, no device left behind
  [ -n "$id" ] && [ -e /sys/block/zram$id ] || return 0
  swapoff /dev/zram$id 2>/dev/null
  { echo 1 > /sys/block/zram$id/reset; echo $id > $ctl/hot_remove; } 2>/dev/null
}
trap cleanup EXIT; trap 'exit 1' INT TERM HUP
while [ $i -lt $n ]; do
  id=$(cat $ctl/hot_add) || exit 1
  dev=/dev/zram$id; sys=/sys/block/zram$id
  echo $(( (i % 4 + 1) * step ))M > $sys/disksize
  dd if=/dev/urandom of=$dev bs=64k count=$((i % 5 + 1)) conv=fsync status=none
  if [ $((i % 2)) -eq 0 ]; then
    mkswap -q $dev >/dev/null && swapon $dev && swapoff $dev
  fi
  echo 1 > $sys/reset
  echo $id > $ctl/hot_remove; id=""
  i=$((i+1))
done
