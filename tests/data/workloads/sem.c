/* System V semaphore sets of 1..32000 semaphores (kernel.sem's SEMMSL here): newary()
 * kvzalloc()s the set with one 64-byte struct sem per semaphore (up to 2 MiB); IPC_RMID
 * frees it after an RCU grace period.  Usage: sem [SETS [SEED]]; removes every set. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 300; srand(argc > 2 ? atoi(argv[2]) : 1);
  int ids[32]; int k = 0, ok = 0;
  for (int i = 0; i < n; i++) {
    int ns = 1 + rand() % (rand() % 2 ? 32000 : 2000);
    int id = semget(IPC_PRIVATE, ns, IPC_CREAT | 0600);
    if (id >= 0) { ok++; if (k < 32 && rand() % 3) ids[k++] = id; else semctl(id, 0, IPC_RMID); }
    if (k && rand() % 2) { int j = rand() % k; semctl(ids[j], 0, IPC_RMID); ids[j] = ids[--k]; }
    if (rand() % 8 == 0) usleep(rand() % 3000);
  }
  while (k) semctl(ids[--k], 0, IPC_RMID);
  fprintf(stderr, "sem: %d sets\n", ok); return 0;
}
