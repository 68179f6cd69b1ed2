/* Short-lived processes exec'ed with big argument and environment vectors (up to ~1.5 MiB:
 * copy_strings fills the new stack's pages), several at a time, plus pthread pools whose
 * threads have 8-64 MiB user stacks.  Usage: execargv [ROUNDS [SEED]] (re-executes itself
 * as the child: execargv -c ...). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void *work(void *a) { usleep((long)a); return 0; }
int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "-c")) {
    int nt = atoi(argv[2]); pthread_t t[16]; pthread_attr_t at; pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, (size_t)8 << (20 + rand() % 4));
    for (int i = 0; i < nt; i++) pthread_create(&t[i], &at, work, (void *)(long)(rand() % 3000));
    for (int i = 0; i < nt; i++) pthread_join(t[i], 0);
    return 0;
  }
  int n = argc > 1 ? atoi(argv[1]) : 200; srand(argc > 2 ? atoi(argv[2]) : 1);
  static char big[1 << 17];
  for (int r = 0; r < n; r++) {
    int par = 1 + rand() % 6;
    for (int j = 0; j < par; j++) {
      if (fork() == 0) {
        int na = 3 + rand() % 12, ne = 1 + rand() % 8; char *av[20], *ev[12], nt[8];
        snprintf(nt, sizeof nt, "%d", rand() % 12);
        av[0] = argv[0]; av[1] = "-c"; av[2] = nt;
        for (int i = 3; i < na; i++) { size_t l = rand() % sizeof big; av[i] = malloc(l + 1); memset(av[i], 'a' + i, l); av[i][l] = 0; }
        av[na] = 0;
        for (int i = 0; i < ne; i++) { size_t l = rand() % sizeof big; ev[i] = malloc(l + 4); memcpy(ev[i], "E=", 2); memset(ev[i] + 2, 'e', l); ev[i][l + 2] = 0; }
        ev[ne] = 0;
        execve("/proc/self/exe", av, ev); _exit(127);
      }
    }
    while (wait(0) > 0) ;
  }
  return 0;
}
