#!/bin/sh
# file-system mounts on a loop device (needs xfsprogs and btrfs-progs): XFS and btrfs
# start many workqueues with rescuer threads (kernel threads: vmalloc'ed stacks) and
# kvmalloc log and tree buffers at mount; files are written, synced and deleted, then
# the file system is unmounted and the loop device detached.
# Usage: fsmount.sh [ROUNDS]; leaves no loop device, mount or image.
n=${1:-2}; img=/dev/shm/pyvm-fsmount.img; mnt=/dev/shm/pyvm-fsmount.mnt; dev=""; i=0
cleanup() {  # also on Ctrl-C or a kill
  mountpoint -q $mnt && umount $mnt
  [ -n "$dev" ] && losetup -d $dev 2>/dev/null
  rmdir $mnt 2>/dev/null; rm -f $img
}
trap cleanup EXIT; trap 'exit 1' INT TERM HUP
mkdir -p $mnt
while [ $i -lt $n ]; do
  for fs in xfs btrfs ext4; do
    rm -f $img; truncate -s 512M $img
    dev=$(losetup -f --show $img) || exit 1
    case $fs in
      xfs) mkfs.xfs -q -f $dev ;;
      btrfs) mkfs.btrfs -q -f $dev >/dev/null ;;
      ext4) mkfs.ext4 -q -F $dev ;;
    esac
    if mount -t $fs $dev $mnt; then
      j=0; while [ $j -lt 16 ]; do head -c $((j * 65536)) /dev/urandom > $mnt/f$j; j=$((j+1)); done
      sync; rm -f $mnt/f*; sync; umount $mnt
    fi
    losetup -d $dev; dev=""
  done
  i=$((i+1))
done
