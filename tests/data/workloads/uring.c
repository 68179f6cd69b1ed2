#include <linux/io_uring.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
int main(int argc,char**argv){ int n=argc>1?atoi(argv[1]):200; srand(argc>2?atoi(argv[2]):1); int fds[64]; int nf=0; int ok=0;
 for(int i=0;i<n;i++){ struct io_uring_params p; memset(&p,0,sizeof p); unsigned e=1u<<(2+rand()%10);
  int fd=syscall(__NR_io_uring_setup,e,&p); if(fd>=0){ ok++; if(nf<64 && rand()%3) fds[nf++]=fd; else close(fd);} 
  if(nf && rand()%2){ int k=rand()%nf; close(fds[k]); fds[k]=fds[--nf]; } usleep(rand()%300);} 
 while(nf) close(fds[--nf]); fprintf(stderr,"io_uring ok %d/%d\n",ok,n); return 0;}
