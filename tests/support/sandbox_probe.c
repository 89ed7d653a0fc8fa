// A static helper copied into test rootfses: tries one thing a RUN step must not be able to do
// (or a harmless control) and says what happened. Exit 0: the operation succeeded; 1: it failed
// (the reason is printed); 2: usage.
//
//   sandbox_probe ptrace PID      PTRACE_ATTACH to PID
//   sandbox_probe mount DIR       mount a tmpfs on DIR
//   sandbox_probe module FILE     finit_module(FILE)
//   sandbox_probe userns          unshare(CLONE_NEWUSER)
//   sandbox_probe alloc MIB       allocate and touch MIB mebibytes
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

static int Report(const char* what, long rc) {
  if (rc == 0) {
    printf("%s: ok\n", what);
    return 0;
  }
  printf("%s: %s\n", what, strerror(errno));
  return 1;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 2) return 2;
  const char* op = argv[1];
  if (strcmp(op, "ptrace") == 0 && argc == 3) {
    return Report("ptrace", ptrace(PTRACE_ATTACH, (pid_t)atoi(argv[2]), NULL, NULL));
  }
  if (strcmp(op, "mount") == 0 && argc == 3) {
    return Report("mount", mount("none", argv[2], "tmpfs", 0, NULL));
  }
  if (strcmp(op, "module") == 0 && argc == 3) {
    int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Report("open", -1);
    return Report("finit_module", syscall(SYS_finit_module, fd, "", 0));
  }
  if (strcmp(op, "userns") == 0) return Report("unshare", unshare(CLONE_NEWUSER));
  if (strcmp(op, "alloc") == 0 && argc == 3) {
    long mib = atol(argv[2]);
    for (long i = 0; i < mib; ++i) {
      char* p = malloc(1 << 20);
      if (!p) return Report("malloc", -1);
      memset(p, 1, 1 << 20);
    }
    printf("alloc: ok\n");
    return 0;
  }
  return 2;
}
