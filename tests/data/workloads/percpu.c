/* per-CPU memory: BPF per-CPU array maps allocate one per-CPU slot per element; when the
 * per-CPU allocator's chunks are full it creates a new chunk, whose address space comes
 * from the top of the vmalloc range (pcpu_get_vm_areas, which has no tracepoint), and
 * destroys empty chunks later from a worker.  Usage: percpu [MAPS [ENTRIES [SEED]]]. */
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static int map_create(unsigned entries, unsigned value_size)
{
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_PERCPU_ARRAY;
	a.key_size = 4;
	a.value_size = value_size;
	a.max_entries = entries;
	return (int)syscall(__NR_bpf, BPF_MAP_CREATE, &a, sizeof(a));
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 8;
	unsigned entries = argc > 2 ? (unsigned)atoi(argv[2]) : 60000;
	srand(argc > 3 ? atoi(argv[3]) : 1);
	struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
	setrlimit(RLIMIT_MEMLOCK, &rl);
	int fds[64], nf = 0;
	for (int i = 0; i < n && nf < 64; i++) {
		int fd = map_create(entries / 2 + (unsigned)rand() % entries, 8u << (rand() % 3));
		if (fd < 0) {
			perror("BPF_MAP_CREATE");
			return 1;
		}
		fds[nf++] = fd;
		if (nf > 2 && rand() % 2) {
			int k = rand() % nf;
			close(fds[k]);
			fds[k] = fds[--nf];
		}
		usleep(20000);
	}
	while (nf)
		close(fds[--nf]);
	sleep(1); /* let the per-CPU balance worker free the empty chunks */
	return 0;
}
