/* seccomp filters: each child installs a few classic-BPF seccomp filters of different
 * lengths (the kernel vmalloc()s each filter's bpf_prog and JITs it), runs, and exits
 * (the filters are freed with the task).  Usage: seccomp [CHILDREN [SEED]]. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int install(int len)
{
	/* len-1 no-op loads of the syscall number, then "allow" */
	struct sock_filter *f = calloc(len, sizeof(*f));
	for (int i = 0; i < len - 1; i++)
		f[i] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0);
	f[len - 1] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	struct sock_fprog prog = {.len = (unsigned short)len, .filter = f};
	int r = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
	free(f);
	return r;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100;
	srand(argc > 2 ? atoi(argv[2]) : 1);
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	for (int i = 0; i < n; i++) {
		int k = 1 + rand() % 4, lens[4];
		for (int j = 0; j < k; j++)
			lens[j] = 2 + rand() % 4000;
		pid_t pid = fork();
		if (pid == 0) {
			for (int j = 0; j < k; j++)
				if (install(lens[j]))
					_exit(1);
			usleep(rand() % 2000);
			_exit(0);
		}
		if (rand() % 3 == 0)
			while (waitpid(-1, 0, WNOHANG) > 0)
				;
	}
	while (wait(0) > 0)
		;
	return 0;
}
