#!/bin/sh
# IPsec policy tables growing in a private network namespace: with NUMA
# (hashdist) xfrm_hash_alloc() vzalloc()s every hash table over a page, and the resize
# worker (xfrm_hash_resize -> xfrm_bydst_resize) replaces a direction's bydst table by one
# twice the size (this kernel has no ESP/AH, so there are no states), vfree()ing the old.  Usage: xfrm.sh [ROUNDS [SEED]]; deletes its namespace.
n=${1:-4}; s=${2:-1}; ns=pyvm-xfrm$$
ip netns add $ns || exit 1
trap 'ip netns del $ns 2>/dev/null' EXIT INT TERM
i=0
while [ $i -lt $n ]; do
  awk -v seed=$((s * 100 + i)) 'BEGIN { srand(seed); k = 2000 + int(rand() * 14000);
    for (j = 0; j < k; j++) {
      a = sprintf("10.%d.%d.%d", int(j / 65536) % 256, int(j / 256) % 256, j % 256);
      printf "xfrm policy add src 192.168.0.1/32 dst %s/32 dir out\n", a
      if (rand() < 0.5) printf "xfrm policy add src %s/32 dst 192.168.0.1/32 dir in\n", a } }' \
    | ip -n $ns -force -batch - 2>/dev/null
  ip -n $ns xfrm policy flush
  i=$((i + 1))
done
