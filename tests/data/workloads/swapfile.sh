#!/bin/sh
# Swap files as a server adds them: 64 MiB-1 GiB files on the root file system, mkswap,
# swapon (swap_map, cluster info and the swap cgroup map are vzalloc()ed/kvcalloc()ed by
# size), zswap switched on with a rotating compressor (lzo, lzo-rle, deflate: a new zswap
# pool with per-CPU compression contexts) in some rounds, memory pressure from a task in
# a 48 MiB memory cgroup (v1) so that pages really go out, then swapoff and rm.  zswap's
# enabled/compressor parameters are written back at the end.  Needs stress-ng.
# Usage: swapfile.sh [ROUNDS [SEED]]
n=${1:-6}; s=${2:-1}; d=/var/tmp/pyvm-swap$$; cg=/sys/fs/cgroup/memory/pyvm-swap$$
z=/sys/module/zswap/parameters
zen=$(cat $z/enabled); zco=$(cat $z/compressor)
cleanup() {
  swapoff $d/swap 2>/dev/null; rm -rf $d
  [ -d $cg ] && { cat $cg/tasks 2>/dev/null | while read p; do kill -9 $p 2>/dev/null; done; sleep 0.2; rmdir $cg 2>/dev/null; }
  echo $zen > $z/enabled; echo $zco > $z/compressor
}
trap cleanup EXIT
trap 'exit 1' INT TERM
mkdir $d || exit 1
mkdir $cg || exit 1
echo $((48 << 20)) > $cg/memory.limit_in_bytes
i=0
while [ $i -lt $n ]; do
  mb=$(awk -v seed=$((s * 1000 + i)) 'BEGIN { srand(seed); printf "%d", 64 * 2 ^ int(rand() * 5) + 64 * int(rand() * 4) }')
  fallocate -l ${mb}M $d/swap && chmod 600 $d/swap && mkswap -q $d/swap || exit 1
  case $((i % 4)) in
    1) echo lzo-rle > $z/compressor; echo Y > $z/enabled ;;
    2) echo deflate > $z/compressor; echo Y > $z/enabled ;;
    3) echo lzo > $z/compressor; echo Y > $z/enabled ;;
    *) echo N > $z/enabled ;;
  esac
  swapon $d/swap || exit 1
  sh -c "echo \$\$ > $cg/tasks; exec stress-ng --vm 1 --vm-bytes 128M --vm-keep -t 2 -q" || true
  swapoff $d/swap || exit 1
  rm -f $d/swap
  i=$((i + 1))
done
