#!/bin/sh
# loop devices with file systems: make an image in /dev/shm, attach it to a loop device
# (the loop driver starts a workqueue with a rescuer thread), mkfs.ext4, mount it (jbd2
# and ext4 start kernel threads, whose stacks are vmalloc'ed), write and delete files,
# unmount, detach.  Usage: fsloop.sh [ROUNDS]; leaves no loop device, mount or image.
n=${1:-6}; i=0
img=/dev/shm/pyvm-fsloop.img; mnt=/dev/shm/pyvm-fsloop.mnt
dev=""
cleanup() {  # also on Ctrl-C or a kill: unmount, detach, remove the image
  mountpoint -q $mnt && umount $mnt
  [ -n "$dev" ] && losetup -d $dev 2>/dev/null
  rmdir $mnt 2>/dev/null; rm -f $img
}
trap cleanup EXIT; trap 'exit 1' INT TERM HUP
mkdir -p $mnt
while [ $i -lt $n ]; do
  truncate -s $(( (i % 3 + 1) * 32 ))M $img
  dev=$(losetup -f --show $img) || break
  mkfs.ext4 -q -F $dev
  mount $dev $mnt && {
    j=0; while [ $j -lt 20 ]; do head -c $((j * 4096)) /dev/zero > $mnt/f$j; j=$((j+1)); done
    sync; rm -f $mnt/f*; umount $mnt; }
  losetup -d $dev; dev=""
  i=$((i+1))
done
