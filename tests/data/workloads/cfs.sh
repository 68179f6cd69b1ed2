#!/bin/sh
# compressed read-only file systems (needs squashfs-tools and erofs-utils): squashfs
# images with gzip, xz, lz4, lzo and zstd, erofs images with lz4, lz4hc, lzma, deflate
# and zstd; each is mounted (squashfs on a loop device, erofs from the file), read
# through, and unmounted. Their decompressors vmalloc workspaces at mount time (xz's
# dictionary, lz4's output block), and erofs maps a multi-page compressed cluster's
# pages with vm_map_ram while it decompresses. Usage: cfs.sh [ROUNDS]; removes all it makes.
n=${1:-2}; d=/dev/shm/pyvm-cfs; i=0
cleanup() {  # also on Ctrl-C or a kill
  for m in $d/mnt*; do mountpoint -q $m 2>/dev/null && umount $m; done
  rm -rf $d
}
trap cleanup EXIT; trap 'exit 1' INT TERM HUP
mkdir -p $d/src $d/mnt
j=0; while [ $j -lt 16 ]; do  # half compressible text, half random data, 128-512 KiB
  seq 1 $((j * 4000 + 1000)) > $d/src/t$j
  head -c $(( (j % 4 + 1) * 131072 )) /dev/urandom > $d/src/r$j; j=$((j+1)); done
while [ $i -lt $n ]; do
  for c in gzip xz lz4 lzo zstd; do
    mksquashfs $d/src $d/img -comp $c -noappend -quiet >/dev/null 2>&1 || continue
    mount -t squashfs -o loop,ro $d/img $d/mnt && { cat $d/mnt/* > /dev/null; umount $d/mnt; }
    rm -f $d/img
  done
  for c in lz4 lz4hc lzma deflate zstd; do
    mkfs.erofs -z$c -C65536 -Efragments $d/img $d/src >/dev/null 2>&1 ||
      mkfs.erofs -z$c $d/img $d/src >/dev/null 2>&1 || continue
    mount -t erofs -o ro $d/img $d/mnt && { cat $d/mnt/* > /dev/null; umount $d/mnt; }
    rm -f $d/img
  done
  i=$((i+1))
done
