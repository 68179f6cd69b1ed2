#!/bin/sh
# ipset tables as a firewall keeps them, in a private network namespace: hash:ip,
# hash:net and hash:ip,port sets with 1k-4M hash buckets (ip_set_alloc() kvzalloc()s the
# bucket table: vmalloc above 4 MiB), filled by `ipset restore` until they grow (each
# resize allocates a table twice as big, then frees the old one), swapped and destroyed;
# bitmap:port sets too.  Needs ipset.  Usage: ipset.sh [ROUNDS [SEED]]; deletes its namespace.
n=${1:-6}; s=${2:-1}; ns=pyvm-ips$$
ip netns add $ns || exit 1
trap 'ip netns del $ns 2>/dev/null' EXIT
trap 'exit 1' INT TERM
i=0
while [ $i -lt $n ]; do
  awk -v seed=$((s * 100 + i)) 'BEGIN { srand(seed);
    hs = 2 ^ (15 + int(rand() * 8)); k = int(rand() * 200000);
    printf "create a%d hash:ip family inet hashsize %d maxelem 4000000\n", 0, hs
    printf "create b%d hash:net family inet hashsize %d maxelem 4000000\n", 0, 2 ^ (10 + int(rand() * 8))
    printf "create c%d hash:ip,port family inet hashsize 1024 maxelem 4000000\n", 0
    printf "create d%d bitmap:port range 0-65535\n", 0
    for (j = 0; j < k; j++) printf "add a0 10.%d.%d.%d\n", int(j / 65536) % 256, int(j / 256) % 256, j % 256
    m = int(rand() * 20000)
    for (j = 0; j < m; j++) printf "add b0 172.%d.%d.0/24\n", 16 + int(j / 256) % 16, j % 256
    m = int(rand() * 40000)
    for (j = 0; j < m; j++) printf "add c0 192.168.%d.%d,tcp:%d\n", int(j / 256) % 256, j % 256, 1 + j % 60000
    for (j = 0; j < 1000; j++) printf "add d0 %d\n", int(rand() * 65536) }' \
    | ip netns exec $ns ipset -exist restore || exit 1
  ip netns exec $ns ipset list -t >/dev/null
  ip netns exec $ns ipset create t0 hash:ip hashsize $((1 << (12 + i % 8))) || exit 1
  ip netns exec $ns ipset swap a0 t0
  ip netns exec $ns ipset destroy
  sleep 0.2
  i=$((i + 1))
done
