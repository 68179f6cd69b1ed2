/* BPF JIT images in the module/execmem range: keep many large programs loaded so the
 * 2 MiB bpf_prog_pack chunks fill and new packs are allocated, and load a few programs
 * whose image exceeds a pack (allocated on their own); everything is closed at the end.
 * Usage: bpfjit [PROGRAMS [SEED [BIG_INSNS]]]. */
#include <linux/bpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

static int load(int ninsn)
{
	struct bpf_insn *ins = calloc((size_t)ninsn, sizeof(*ins));
	for (int i = 0; i < ninsn - 1; i++)
		ins[i] = (struct bpf_insn){.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = i};
	ins[ninsn - 1] = (struct bpf_insn){.code = BPF_JMP | BPF_EXIT};
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	a.insns = (unsigned long)ins;
	a.insn_cnt = (unsigned)ninsn;
	a.license = (unsigned long)"GPL";
	int fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	free(ins);
	return fd;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 300;
	srand(argc > 2 ? atoi(argv[2]) : 1);
	int big = argc > 3 ? atoi(argv[3]) : 400000;
	struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
	setrlimit(RLIMIT_MEMLOCK, &rl);
	int fds[512], nf = 0;
	for (int i = 0; i < n && nf < 512; i++) {
		int len = i % 100 == 50 ? big : 1000 + rand() % 8000;
		int fd = load(len);
		if (fd < 0) {
			perror("BPF_PROG_LOAD");
			break;
		}
		fds[nf++] = fd;
		if (rand() % 4 == 0) { /* a quarter are closed again at once */
			int k = rand() % nf;
			close(fds[k]);
			fds[k] = fds[--nf];
		}
	}
	while (nf)
		close(fds[--nf]);
	return 0;
}
