// cfsctl entry point (placeholder until the CLI lands).
#include <cstdio>

int main() {
  std::puts("cfsctl");
  return 0;
}
