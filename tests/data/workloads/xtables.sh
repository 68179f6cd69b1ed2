#!/bin/sh
# iptables rule sets loaded whole into a private network namespace, with the legacy
# x_tables backend (xt_alloc_table_info kvmalloc()s the blob, the counters are vzalloc()ed
# on every replace and read) and with nftables (nf_tables sets: hash buckets and the
# rhashtable's resizes).  Usage: xtables.sh [ROUNDS [SEED]]; deletes its namespace.
n=${1:-6}; s=${2:-1}; ns=pyvm-xt$$
ip netns add $ns || exit 1
trap 'ip netns del $ns 2>/dev/null' EXIT INT TERM
i=0
while [ $i -lt $n ]; do
  awk -v seed=$((s * 100 + i)) 'BEGIN { srand(seed); k = 500 + int(rand() * 20000);
    print "*filter"; print ":INPUT ACCEPT [0:0]"; print ":FORWARD ACCEPT [0:0]"; print ":OUTPUT ACCEPT [0:0]"
    for (j = 0; j < k; j++) printf "-A INPUT -s 10.%d.%d.%d/32 -p tcp --dport %d -j DROP\n", int(j / 65536) % 256, int(j / 256) % 256, j % 256, 1 + int(rand() * 60000)
    print "COMMIT" }' | ip netns exec $ns iptables-legacy-restore
  ip netns exec $ns iptables-legacy-save -c >/dev/null
  awk -v seed=$((s * 100 + i)) 'BEGIN { srand(seed); k = 1000 + int(rand() * 60000);
    print "table inet pv {\n set s {\n  type ipv4_addr\n  flags dynamic\n  size 1000000\n }\n set h {\n  type ipv4_addr\n  size " k "\n }"
    print " chain c {\n  type filter hook input priority 0\n  ip saddr @s drop\n  ip daddr @h drop\n }\n}"
    printf "add element inet pv s {"; for (j = 0; j < k; j++) printf "%s10.%d.%d.%d", j ? "," : " ", int(j / 65536) % 256, int(j / 256) % 256, j % 256; print " }" }' \
    | ip netns exec $ns nft -f -
  ip netns exec $ns nft delete table inet pv
  ip netns exec $ns iptables-legacy -F
  i=$((i + 1))
done
