/* Load and unload BPF socket-filter programs of random length (raw bpf(2)). */
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
static int load(int ninsn){ static struct bpf_insn ins[8192]; for(int i=0;i<ninsn-1;i++){ ins[i]=(struct bpf_insn){.code=BPF_ALU64|BPF_MOV|BPF_K,.dst_reg=0,.imm=i}; }
 ins[ninsn-1]=(struct bpf_insn){.code=BPF_JMP|BPF_EXIT};
 union bpf_attr a; memset(&a,0,sizeof a); a.prog_type=BPF_PROG_TYPE_SOCKET_FILTER; a.insns=(unsigned long)ins; a.insn_cnt=ninsn; a.license=(unsigned long)"GPL";
 return syscall(__NR_bpf,BPF_PROG_LOAD,&a,sizeof a);}
int main(int argc,char**argv){ int n=argc>1?atoi(argv[1]):300; srand(argc>2?atoi(argv[2]):1); int fds[128]; int nf=0, ok=0;
 for(int i=0;i<n;i++){ int fd=load(2+rand()%4000); if(fd>=0){ok++; if(nf<128) fds[nf++]=fd; else close(fd);} 
  if(nf && rand()%2){int k=rand()%nf; close(fds[k]); fds[k]=fds[--nf];} usleep(rand()%400);} 
 while(nf) close(fds[--nf]); fprintf(stderr,"bpf progs ok %d/%d\n",ok,n); return 0;}
