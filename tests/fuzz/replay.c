/* Replays inputs through a harness without libFuzzer, so that the
 * sanitizer build (MCGW_SANITIZE: gcc, ASan+UBSan, the compiler mcgw ships
 * with) runs every committed corpus and regression input against its own
 * build of the engine. tests/CMakeLists.txt links each tests/fuzz/fuzz_*.c
 * with this main; `fuzz_replay_<h> DIR|FILE...` runs each input once, in
 * name order, like `<h> -runs=0 DIR`. Fuzzing itself stays in the clang
 * build (scripts/fuzz.sh), which is ASan+UBSan too. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Not every harness has one. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static size_t replayed;

static void replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    perror(path);
    exit(1);
  }
  size_t cap = 4096, len = 0;
  uint8_t *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap)
      buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (!buf) {
    fprintf(stderr, "replay: out of memory\n");
    exit(1);
  }
  /* An exact-size copy, so ASan sees reads past the input's end. */
  uint8_t *exact = malloc(len ? len : 1);
  memcpy(exact, buf, len);
  free(buf);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  replayed++;
}

static int by_name(const struct dirent **a, const struct dirent **b) {
  return strcmp((*a)->d_name, (*b)->d_name);
}

static void replay(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) {
    perror(path);
    exit(1);
  }
  if (!S_ISDIR(st.st_mode)) {
    replay_file(path);
    return;
  }
  struct dirent **names;
  int n = scandir(path, &names, NULL, by_name);
  if (n < 0) {
    perror(path);
    exit(1);
  }
  for (int i = 0; i < n; i++) {
    if (names[i]->d_name[0] != '.') {
      char *p;
      if (asprintf(&p, "%s/%s", path, names[i]->d_name) < 0)
        exit(1);
      replay(p);
      free(p);
    }
    free(names[i]);
  }
  free(names);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize(&argc, &argv);
  for (int i = 1; i < argc; i++)
    replay(argv[i]);
  fprintf(stderr, "replay: %zu inputs, no failure\n", replayed);
  return 0;
}
