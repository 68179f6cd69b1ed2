/* big file-descriptor tables: a process raises RLIMIT_NOFILE and dup2()s a descriptor to a
 * high number, so its fd table grows to 2^k slots; slot arrays above 4 MiB (k >= 20, the
 * kernel's fs.nr_open default) come from kvmalloc's vmalloc fallback, with huge-page
 * alignment.  Children fork (dup_fd copies the table) and exit; the table grows in steps.
 * Usage: fdtab [ROUNDS [SEED]]. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 20;
	srand(argc > 2 ? atoi(argv[2]) : 1);
	FILE *f = fopen("/proc/sys/fs/nr_open", "r");
	long nr_open = 1048576;
	if (f) {
		if (fscanf(f, "%ld", &nr_open) != 1)
			nr_open = 1048576;
		fclose(f);
	}
	struct rlimit rl = {nr_open, nr_open};
	if (setrlimit(RLIMIT_NOFILE, &rl)) {
		perror("setrlimit");
		return 1;
	}
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			/* grow the table in steps: 64 Ki, 256 Ki, then up to nr_open slots */
			long steps[3] = {65536, 262144, nr_open - 1 - rand() % 1000};
			int k = 1 + rand() % 3;
			for (int j = 0; j < k; j++)
				if (dup2(0, (int)steps[j]) < 0)
					_exit(1);
			int kids = rand() % 3;
			for (int c = 0; c < kids; c++)
				if (fork() == 0) {
					usleep(rand() % 5000);
					_exit(0);
				}
			while (wait(0) > 0)
				;
			_exit(0);
		}
		if (rand() % 2)
			waitpid(pid, 0, 0);
	}
	while (wait(0) > 0)
		;
	return 0;
}
