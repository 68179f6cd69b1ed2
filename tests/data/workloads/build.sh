#!/bin/sh
# a build: `make -j2` of N generated C files (cc1, as, collect2 and ld for each: a burst
# of short-lived, larger processes), in a temporary directory that is removed.
# Usage: build.sh [FILES]
n=${1:-30}; d=$(mktemp -d /tmp/pyvm-build.XXXXXX) || exit 1
i=0; objs=""
while [ $i -lt $n ]; do
  printf '#include <stdio.h>\nint f%d(int x){int s=0;for(int i=0;i<x;i++)s+=i*%d;return s;}\n' $i $i > $d/f$i.c
  objs="$objs f$i.o"; i=$((i+1))
done
printf 'int main(void){return 0;}\n' > $d/main.c
printf 'prog: main.o%s\n\tcc -o $@ $^\n%%.o: %%.c\n\tcc -O2 -c -o $@ $<\n' "$objs" > $d/Makefile
make -s -C $d -j2 prog
rm -rf $d
