/* BPF ring buffers and arenas: a ring buffer map is vmap()ed with its data pages mapped
 * twice (2 x size + 3 pages, plus the guard); an arena map reserves a 4 GiB sparse area
 * (get_vm_area) and maps pages into it only when used.  Maps are created and closed at
 * random.  Usage: bpfring [OPS [SEED]]. */
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef BPF_F_MMAPABLE
#define BPF_F_MMAPABLE (1U << 10)
#endif

static int map_create(unsigned type, unsigned entries, unsigned flags)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = type;
	a.max_entries = entries;
	a.map_flags = flags;
	return (int)syscall(__NR_bpf, BPF_MAP_CREATE, &a, sizeof(a));
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 200;
	srand(argc > 2 ? atoi(argv[2]) : 1);
	struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
	setrlimit(RLIMIT_MEMLOCK, &rl);
	int fds[48], nf = 0;
	for (int i = 0; i < n; i++) {
		int fd;
		if (rand() % 8 == 0)
			fd = map_create(33 /* BPF_MAP_TYPE_ARENA */, 1 + rand() % 1024, BPF_F_MMAPABLE);
		else
			fd = map_create(BPF_MAP_TYPE_RINGBUF, 4096u << (rand() % 9), 0);
		if (fd >= 0 && nf < 48)
			fds[nf++] = fd;
		else if (fd >= 0)
			close(fd);
		else
			perror("BPF_MAP_CREATE");
		if (nf && rand() % 2) {
			int k = rand() % nf;
			close(fds[k]);
			fds[k] = fds[--nf];
		}
		usleep(rand() % 1000);
	}
	while (nf)
		close(fds[--nf]);
	return 0;
}
