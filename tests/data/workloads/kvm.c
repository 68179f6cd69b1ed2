/* KVM virtual machines created and destroyed: on x86 struct kvm (kvm_vmx/kvm_svm) is
 * __vmalloc'ed, memory slots get kvzalloc'ed dirty bitmaps (KVM_MEM_LOG_DIRTY_PAGES;
 * 2 bits per 4 KiB page, so a 64 GiB slot needs 4 MiB) and lpage_info arrays, and
 * vCPUs bring their own allocations.  Guest memory is an untouched MAP_NORESERVE
 * mapping.  Usage: kvm [VMS [SEED]]; closes everything it opens. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 60; srand(argc > 2 ? atoi(argv[2]) : 1);
  int kvm = open("/dev/kvm", O_RDWR); if (kvm < 0) { perror("/dev/kvm"); return 1; }
  int ok = 0;
  for (int i = 0; i < n; i++) {
    int vm = ioctl(kvm, KVM_CREATE_VM, 0); if (vm < 0) { perror("KVM_CREATE_VM"); continue; }
    int ns = 1 + rand() % 4; void *mem[4]; size_t len[4];
    for (int s = 0; s < ns; s++) {
      len[s] = (size_t)1 << (21 + rand() % 16);            /* 2 MiB .. 64 GiB */
      mem[s] = mmap(0, len[s], PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (mem[s] == MAP_FAILED) { ns = s; break; }
      struct kvm_userspace_memory_region r = { .slot = s, .flags = rand() % 2 ? KVM_MEM_LOG_DIRTY_PAGES : 0,
        .guest_phys_addr = (unsigned long long)s << 37, .memory_size = len[s], .userspace_addr = (unsigned long)mem[s] };
      if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r) < 0) perror("SET_USER_MEMORY_REGION");
    }
    int nv = rand() % 3, vc[3];
    for (int v = 0; v < nv; v++) vc[v] = ioctl(vm, KVM_CREATE_VCPU, v);
    usleep(rand() % 20000);
    for (int v = 0; v < nv; v++) if (vc[v] >= 0) close(vc[v]);
    close(vm); ok++;
    for (int s = 0; s < ns; s++) munmap(mem[s], len[s]);
  }
  close(kvm); fprintf(stderr, "kvm: %d VMs\n", ok); return 0;
}
