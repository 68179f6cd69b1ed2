/* io_uring rings of every size: io_create_region allocates the SQ ring, CQ ring and SQE
 * array as one compound page when it can (order <= MAX_PAGE_ORDER, no retry) and vmap()s
 * the pages otherwise; SQE128/CQE32 rings of 4k-32k entries reach 1-4 MiB.  Some rings use
 * IORING_SETUP_SQPOLL (an iou-sqp kernel thread: a task stack) and some register a
 * provided-buffer ring (another region).  Usage: uring2 [RINGS [SEED]]; closes every ring. */
#include <linux/io_uring.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200; srand(argc > 2 ? atoi(argv[2]) : 1);
  int fds[16], nf = 0, ok = 0, sq = 0;
  for (int i = 0; i < n; i++) {
    struct io_uring_params p; memset(&p, 0, sizeof p);
    unsigned e = 1u << (rand() % 16);
    if (rand() % 2) p.flags |= IORING_SETUP_SQE128;
    if (rand() % 2) p.flags |= IORING_SETUP_CQE32;
    if (rand() % 3 == 0) { p.flags |= IORING_SETUP_CQSIZE; p.cq_entries = 2 * e << (rand() % 2); }
    if (rand() % 6 == 0) { p.flags |= IORING_SETUP_SQPOLL; p.sq_thread_idle = 10; sq++; }
    int fd = syscall(__NR_io_uring_setup, e, &p);
    if (fd < 0) continue;
    ok++;
    if (rand() % 3 == 0) {
      struct io_uring_buf_reg reg; memset(&reg, 0, sizeof reg);
      reg.ring_entries = 1u << (rand() % 15); reg.bgid = 1; reg.pad = 1; /* IOU_PBUF_RING_MMAP: the kernel allocates it */
      syscall(__NR_io_uring_register, fd, IORING_REGISTER_PBUF_RING, &reg, 1);
    }
    if (nf < 16 && rand() % 2) fds[nf++] = fd; else close(fd);
    if (nf && rand() % 2) { int k = rand() % nf; close(fds[k]); fds[k] = fds[--nf]; }
    usleep(rand() % 2000);
  }
  while (nf) close(fds[--nf]);
  fprintf(stderr, "uring2: %d/%d rings, %d sqpoll\n", ok, n, sq); return 0;
}
