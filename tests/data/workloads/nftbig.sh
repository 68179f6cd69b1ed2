#!/bin/sh
# Big nftables sets, in a private network namespace: fixed-size hash sets declared with
# 64k-4M elements (nft_hash kvzalloc()s the bucket array up front: vmalloc above 4 MiB),
# interval sets of concatenated keys (the pipapo backend: lookup tables and per-CPU scratch
# maps reallocated as elements come in), a verdict map; filled in one transaction, then
# the table is deleted.  Needs nftables.  Usage: nftbig.sh [ROUNDS [SEED]]; deletes its namespace.
n=${1:-6}; s=${2:-1}; ns=pyvm-nft$$
ip netns add $ns || exit 1
trap 'ip netns del $ns 2>/dev/null' EXIT
trap 'exit 1' INT TERM
i=0
while [ $i -lt $n ]; do
  awk -v seed=$((s * 100 + i)) 'BEGIN { srand(seed);
    sz = 2 ^ (16 + int(rand() * 7)); k = int(rand() * 30000); p = 200 + int(rand() * 4000)
    print "table inet pb {"
    printf " set h { type ipv4_addr; size %d; }\n", sz
    print " set c { type ipv4_addr . inet_service; flags interval; }"
    printf " map v { type ipv4_addr : verdict; size %d; }\n", 2 ^ (12 + int(rand() * 8))
    print " chain ch { type filter hook input priority 0; ip saddr @h drop; ip saddr . tcp dport @c drop; ip saddr vmap @v; }"
    print "}"
    if (k) { printf "add element inet pb h {"; for (j = 0; j < k; j++) printf "%s10.%d.%d.%d", j ? "," : " ", int(j / 65536) % 256, int(j / 256) % 256, j % 256; print " }" }
    printf "add element inet pb c {"; for (j = 0; j < p; j++) printf "%s10.%d.%d.0/24 . %d-%d", j ? "," : " ", 100 + int(j / 256) % 100, j % 256, 1000 + j, 1000 + j + int(rand() * 50); print " }"
    printf "add element inet pb v {"; for (j = 0; j < 500; j++) printf "%s172.16.%d.%d : drop", j ? "," : " ", int(j / 256), j % 256; print " }" }' \
    | ip netns exec $ns nft -f - || exit 1
  ip netns exec $ns nft delete table inet pb
  sleep 0.2
  i=$((i + 1))
done
