#!/bin/sh
# Connection-tracking hash resizes, as a server's tuning does: writes to
# net.netfilter.nf_conntrack_buckets (init_net only) of 64k-16M buckets.  Each resize
# kvcalloc()s the new hlist_nulls table (8 bytes a bucket: 4 MiB and up is vmalloc'ed)
# and kvfree()s the old one (nf_conntrack_core.c nf_conntrack_hash_resize).  The old
# value is written back at the end.  Usage: ctbuckets.sh [ROUNDS [SEED]]
n=${1:-12}; s=${2:-1}; f=/proc/sys/net/netfilter/nf_conntrack_buckets
old=$(cat $f) || exit 1
trap 'echo $old > $f' EXIT
trap 'exit 1' INT TERM
i=0
while [ $i -lt $n ]; do
  b=$(awk -v seed=$((s * 1000 + i)) 'BEGIN { srand(seed); e = 16 + int(rand() * 8);
    printf "%d", 2 ^ e + (rand() < 0.5 ? int(rand() * 2 ^ (e - 1)) : 0) }')
  echo $b > $f || exit 1
  sleep 0.$((1 + i % 5))
  i=$((i + 1))
done
