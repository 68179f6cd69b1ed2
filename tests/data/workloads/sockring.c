/* socket rings: AF_PACKET receive rings (tcpdump-style packet_mmap) whose blocks are
 * larger than the page allocator's largest order fall back to vzalloc, one per block;
 * AF_XDP sockets vmap() their registered UMEM (user pages) into the kernel.  Sockets are
 * opened, given a ring or a UMEM, and closed at random.  Usage: sockring [OPS [SEED]]. */
#include <linux/if_packet.h>
#include <linux/if_xdp.h>
#include <arpa/inet.h>
#include <net/ethernet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

struct sk {
	int fd;
	void *umem;
	size_t len;
};

static int packet_ring(void)
{
	int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	if (fd < 0)
		return -1;
	int v = TPACKET_V3;
	setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v, sizeof(v));
	struct tpacket_req3 req;
	memset(&req, 0, sizeof(req));
	/* 1 MiB .. 16 MiB blocks: above 4 MiB (order 10) the blocks are vzalloc'ed */
	req.tp_block_size = 1u << (20 + rand() % 5);
	req.tp_block_nr = 1 + rand() % 3;
	req.tp_frame_size = 2048;
	req.tp_frame_nr = req.tp_block_size / req.tp_frame_size * req.tp_block_nr;
	req.tp_retire_blk_tov = 10;
	if (setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req))) {
		perror("PACKET_RX_RING");
		close(fd);
		return -1;
	}
	return fd;
}

static int xdp_umem(struct sk *s)
{
	int fd = socket(AF_XDP, SOCK_RAW, 0);
	if (fd < 0)
		return -1;
	s->len = (size_t)(1 + rand() % 256) * 4096;
	s->umem = mmap(0, s->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct xdp_umem_reg r;
	memset(&r, 0, sizeof(r));
	r.addr = (unsigned long)s->umem;
	r.len = s->len;
	r.chunk_size = 2048;
	if (s->umem == MAP_FAILED || setsockopt(fd, SOL_XDP, XDP_UMEM_REG, &r, sizeof(r))) {
		perror("XDP_UMEM_REG");
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100;
	srand(argc > 2 ? atoi(argv[2]) : 1);
	struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
	setrlimit(RLIMIT_MEMLOCK, &rl);
	struct sk s[32];
	int ns = 0;
	for (int i = 0; i < n; i++) {
		if (ns < 32) {
			s[ns].umem = 0;
			s[ns].fd = rand() % 2 ? packet_ring() : xdp_umem(&s[ns]);
			if (s[ns].fd >= 0)
				ns++;
		}
		if (ns && rand() % 2) {
			int k = rand() % ns;
			close(s[k].fd);
			if (s[k].umem)
				munmap(s[k].umem, s[k].len);
			s[k] = s[--ns];
		}
		usleep(rand() % 2000);
	}
	while (ns--) {
		close(s[ns].fd);
		if (s[ns].umem)
			munmap(s[ns].umem, s[ns].len);
	}
	return 0;
}
