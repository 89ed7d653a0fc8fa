/* A tiny program for the multi-stage example: built in a Debian+gcc stage, tested in a test
 * stage, shipped alone in a busybox stage. */
#include <stdio.h>
#include <string.h>

static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

int main(int argc, char** argv) {
  if (argc > 1 && strcmp(argv[1], "--fib") == 0) {
    printf("%d\n", fib(20));
    return 0;
  }
  printf("hello from a static C binary built by stagefarm\n");
  return 0;
}
