#!/bin/sh
# A long mixed run: for SECONDS seconds, pick one or two of this session's workloads at a
# time (KVM VMs, multi-queue tun devices, SysV semaphore sets, io_uring rings, a bounded
# fork bomb, big-argv execs, routing tables, IPsec policies, many-queue veth pairs,
# iptables/nftables rule sets, memory cgroups) with random sizes, so they overlap.
# The programs sit next to this script.  Usage: mix3.sh [SECONDS [SEED]]
t=${1:-300}; s=${2:-1}; d=$(dirname "$0"); end=$(( $(date +%s) + t )); r=$s
pick() {
  r=$(( (r * 1103515245 + 12345) % 2147483648 ))
  case $(( r / 65536 % 11 )) in
    0) "$d/kvm" 20 $r ;; 1) "$d/tunq" 10 $r ;; 2) "$d/sem" 100 $r ;; 3) "$d/uring2" 60 $r ;;
    4) "$d/forkbomb" 2 3 6 $r ;; 5) "$d/execargv" 30 $r ;; 6) "$d/fibtrie.sh" 2 $r ;;
    7) "$d/xfrm.sh" 1 $r ;; 8) "$d/vethq.sh" 4 $r ;; 9) "$d/xtables.sh" 1 $r ;; 10) "$d/memcg.sh" 1 300 ;;
  esac
}
while [ $(date +%s) -lt $end ]; do
  pick & pick; wait
  r=$(( (r * 1103515245 + 12345) % 2147483648 )); sleep $(( r / 65536 % 3 ))
done 2>/dev/null
