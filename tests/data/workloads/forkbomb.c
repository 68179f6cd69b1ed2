/* A bounded fork bomb: every process forks up to FAN children down to DEPTH levels,
 * the leaves sleep a little, and each parent reaps its children: thousands of task
 * stacks alive at once (kernel/fork.c's per-CPU cache holds two), then freed in bursts.
 * Usage: forkbomb [ROUNDS [DEPTH [FAN [SEED]]]]; every process is reaped. */
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static int fan;
static void grow(int d) {
  int k = 1 + rand() % fan;
  for (int i = 0; i < k; i++) {
    pid_t p = fork();
    if (p == 0) { srand(getpid()); if (d > 1) grow(d - 1); else usleep(rand() % 50000); _exit(0); }
  }
  while (wait(0) > 0) ;
}
int main(int argc, char **argv) {
  int r = argc > 1 ? atoi(argv[1]) : 10, d = argc > 2 ? atoi(argv[2]) : 4;
  fan = argc > 3 ? atoi(argv[3]) : 6; srand(argc > 4 ? atoi(argv[4]) : 1);
  for (int i = 0; i < r; i++) { grow(d); usleep(rand() % 100000); }
  return 0;
}
