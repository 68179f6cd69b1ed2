/* Multi-queue tun devices with long transmit queues: each queue's tx ring is a
 * ptr_ring of txqueuelen pointers, kvmalloc'ed (tun_attach, and tun_queue_resize for
 * every attached queue when txqueuelen changes): 8 bytes x 4k..1M entries = 32 KiB..8 MiB.
 * Usage: tunq [ROUNDS [SEED]]; every device goes away when its last queue is closed. */
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 40; srand(argc > 2 ? atoi(argv[2]) : 1);
  int sk = socket(AF_INET, SOCK_DGRAM, 0);
  for (int r = 0; r < n; r++) {
    int q = 1 + rand() % 8, fd[8]; struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr); snprintf(ifr.ifr_name, IFNAMSIZ, "pvtq%d", r);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_MULTI_QUEUE;
    for (int i = 0; i < q; i++) {
      fd[i] = open("/dev/net/tun", O_RDWR);
      if (fd[i] < 0 || ioctl(fd[i], TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); q = i; break; }
      if (i == 0) { struct ifreq t = ifr; t.ifr_qlen = 4096 << (rand() % 9);
        if (ioctl(sk, SIOCSIFTXQLEN, &t) < 0) perror("SIOCSIFTXQLEN"); }
    }
    if (q && rand() % 2) { struct ifreq t = ifr; t.ifr_qlen = 4096 << (rand() % 9); ioctl(sk, SIOCSIFTXQLEN, &t); }
    usleep(rand() % 5000);
    for (int i = q - 1; i >= 0; i--) close(fd[i]);
  }
  close(sk); return 0;
}
