#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>
static void *work(void *a){ volatile long x=0; long n=(long)a; for(long i=0;i<n;i++) x+=i; usleep(rand()%500); return 0;}
int main(int argc,char**argv){ int rounds=argc>1?atoi(argv[1]):50; int maxn=argc>2?atoi(argv[2]):64; srand(argc>3?atoi(argv[3]):1);
 pthread_t t[512];
 for(int r=0;r<rounds;r++){ int n=1+rand()%maxn; for(int i=0;i<n;i++) pthread_create(&t[i],0,work,(void*)(long)(rand()%20000));
  for(int i=0;i<n;i++) pthread_join(t[i],0); if(rand()%4==0) usleep(2000);} return 0;}
