// A library an attacker would name in a poisoned cache entry: its constructor leaves a marker if it is ever loaded.
#include <cstdio>
#include <cstdlib>
__attribute__((constructor)) static void planted() {
  const char* marker = std::getenv("FAKE_PLANTED_MARKER");
  if (marker) {
    if (FILE* f = std::fopen(marker, "w")) std::fclose(f);
  }
}
