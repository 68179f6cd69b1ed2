#!/bin/sh
# IPv4 routing tables of 10k-80k random /24../32 blackhole routes in a private network namespace:
# fib_trie's tnode_new() vzalloc()s every trie node whose child array exceeds a page
# (2^9 children or more) and frees them after RCU as the trie inflates, halves and is
# flushed.  Usage: fibtrie.sh [ROUNDS [SEED]]; deletes its namespace.
n=${1:-6}; s=${2:-1}; ns=pyvm-fib$$
ip netns add $ns || exit 1
trap 'ip netns del $ns 2>/dev/null' EXIT INT TERM
i=0
while [ $i -lt $n ]; do
  awk -v seed=$((s * 100 + i)) -v t=$((100 + i % 3)) 'BEGIN { srand(seed); k = 10000 + int(rand() * 70000);
    for (j = 0; j < k; j++) { l = 24 + int(rand() * 9); a = int(rand() * 256); b = int(rand() * 256); c = int(rand() * 256);
      c -= c % 2 ^ (32 - l)
      printf "route replace blackhole %d.%d.%d.%d/%d table %d\n", 11 + int(rand() * 200), a, b, c, l, t } }' \
    | ip -n $ns -force -batch - 2>/dev/null
  [ $((i % 2)) -eq 1 ] && ip -n $ns route flush table $((100 + (i - 1) % 3))
  i=$((i + 1))
done
ip -n $ns route flush table all 2>/dev/null
