#!/bin/sh
n=${1:-30}; i=0
while [ $i -lt $n ]; do unshare -n /bin/true; ip netns add pyvm$i; i=$((i+1)); done
i=0; while [ $i -lt $n ]; do ip netns del pyvm$i; i=$((i+1)); done
