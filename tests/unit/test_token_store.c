/* Unit tests for csc1/token_store.c: modes, atomic replace, corrupt files
 * kept aside, parsing garbage. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "csc1/token_store.h"

typedef struct fixture {
  char base[64];
  char dir[128];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  snprintf(f->base, sizeof f->base, "/tmp/mcgw-ts-XXXXXX");
  assert_non_null(mkdtemp(f->base));
  snprintf(f->dir, sizeof f->dir, "%s/state", f->base);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->base);
  assert_int_equal(system(cmd), 0);
  free(f);
  return 0;
}

static mode_t mode_of(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return st.st_mode & 07777;
}

static void file_path(const fixture *f, char *buf, size_t len, const char *suffix) {
  snprintf(buf, len, "%s/%s%s", f->dir, CSC1_TOKEN_STORE_FILE, suffix);
}

static size_t count_entries(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  size_t n = 0;
  struct dirent *e;
  assert_non_null(d);
  while ((e = readdir(d)))
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
      n++;
  closedir(d);
  return n;
}

static csc1_stored_login sample(const char *rt) {
  static char *aud[] = {"kms", "mcgw-vehicle-17"};
  csc1_stored_login l = {.issuer = "https://idms.mc.test",
                       .client_id = "mcgw-vehicle-17",
                       .refresh_token = (char *)rt,
                       .subject = "officer-7",
                       .aud = aud,
                       .n_aud = 2,
                       .mcptt_id = "sip:o7@mcptt.mc.test"};
  return l;
}

static void prepare_creates_0700_and_tightens(void **state) {
  fixture *f = *state;
  char err[256];
  assert_int_equal(csc1_token_store_prepare(f->dir, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(mode_of(f->dir), 0700);
  assert_int_equal(chmod(f->dir, 0755), 0);
  assert_int_equal(csc1_token_store_prepare(f->dir, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(mode_of(f->dir), 0700);
  char file[256];
  snprintf(file, sizeof file, "%s/plain", f->base);
  FILE *fp = fopen(file, "w");
  fclose(fp);
  assert_int_equal(csc1_token_store_prepare(file, err, sizeof err), CSC1_TS_EIO);
  assert_non_null(strstr(err, "not a directory"));
}

static void save_load_roundtrip_0600(void **state) {
  fixture *f = *state;
  char err[256], path[256];
  csc1_stored_login got;
  assert_int_equal(csc1_token_store_prepare(f->dir, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_NONE);
  csc1_stored_login l = sample("rt-one");
  assert_int_equal(csc1_token_store_save(f->dir, &l, err, sizeof err), CSC1_TS_OK);
  file_path(f, path, sizeof path, "");
  assert_int_equal(mode_of(path), 0600);
  assert_int_equal(count_entries(f->dir, CSC1_TOKEN_STORE_FILE), 1); /* no temp left */
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_OK);
  assert_string_equal(got.refresh_token, "rt-one");
  assert_string_equal(got.subject, "officer-7");
  assert_string_equal(got.issuer, "https://idms.mc.test");
  assert_int_equal(got.n_aud, 2);
  assert_string_equal(got.aud[1], "mcgw-vehicle-17");
  assert_string_equal(got.mcptt_id, "sip:o7@mcptt.mc.test");
  assert_null(got.mcdata_id);
  csc1_stored_login_free(&got);
  /* A rotation replaces it; a login without a refresh token is kept too. */
  l = sample("rt-two");
  assert_int_equal(csc1_token_store_save(f->dir, &l, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_OK);
  assert_string_equal(got.refresh_token, "rt-two");
  csc1_stored_login_free(&got);
  l = sample(NULL);
  assert_int_equal(csc1_token_store_save(f->dir, &l, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_OK);
  assert_null(got.refresh_token);
  csc1_stored_login_free(&got);
}

static void loose_mode_is_tightened_on_load(void **state) {
  fixture *f = *state;
  char err[256], path[256];
  csc1_stored_login got, l = sample("rt");
  assert_int_equal(csc1_token_store_prepare(f->dir, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(csc1_token_store_save(f->dir, &l, err, sizeof err), CSC1_TS_OK);
  file_path(f, path, sizeof path, "");
  assert_int_equal(chmod(path, 0644), 0);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(mode_of(path), 0600);
  csc1_stored_login_free(&got);
}

static void corrupt_file_is_kept_aside(void **state) {
  fixture *f = *state;
  char err[256], path[256];
  csc1_stored_login got;
  assert_int_equal(csc1_token_store_prepare(f->dir, err, sizeof err), CSC1_TS_OK);
  file_path(f, path, sizeof path, "");
  FILE *fp = fopen(path, "w");
  fputs("{\"version\": 1, \"issuer\": tru", fp);
  fclose(fp);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_CORRUPT);
  assert_non_null(strstr(err, "not a valid mcgw login file"));
  assert_non_null(strstr(err, ".corrupt-"));
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(count_entries(f->dir, CSC1_TOKEN_STORE_FILE ".corrupt-"), 1);
  /* Twice in the same second: both kept. */
  fp = fopen(path, "w");
  fputs("garbage", fp);
  fclose(fp);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_CORRUPT);
  assert_int_equal(count_entries(f->dir, CSC1_TOKEN_STORE_FILE ".corrupt-"), 2);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_NONE);
}

/* A path that opens but cannot be read (a directory: EISDIR, even as root). */
static void unreadable_file_is_kept_aside(void **state) {
  fixture *f = *state;
  char err[256], path[256];
  csc1_stored_login got;
  assert_int_equal(csc1_token_store_prepare(f->dir, err, sizeof err), CSC1_TS_OK);
  file_path(f, path, sizeof path, "");
  assert_int_equal(mkdir(path, 0700), 0);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_CORRUPT);
  assert_non_null(strstr(err, "cannot be read"));
  assert_int_equal(count_entries(f->dir, CSC1_TOKEN_STORE_FILE ".corrupt-"), 1);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_NONE);
}

/* Logout: the file is gone (no temp, nothing aside); a second remove and a
 * remove with no file are not errors; a later load finds nothing. */
static void remove_is_idempotent(void **state) {
  fixture *f = *state;
  char err[256];
  csc1_stored_login got;
  assert_int_equal(csc1_token_store_prepare(f->dir, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(csc1_token_store_remove(f->dir, err, sizeof err), CSC1_TS_OK);
  csc1_stored_login l = sample("rt-logout");
  assert_int_equal(csc1_token_store_save(f->dir, &l, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(csc1_token_store_remove(f->dir, err, sizeof err), CSC1_TS_OK);
  assert_int_equal(count_entries(f->dir, CSC1_TOKEN_STORE_FILE), 0);
  assert_int_equal(csc1_token_store_load(f->dir, &got, err, sizeof err), CSC1_TS_NONE);
  assert_int_equal(csc1_token_store_remove(f->dir, err, sizeof err), CSC1_TS_OK);
  /* A directory that cannot be opened: an error naming it. */
  char missing[300];
  snprintf(missing, sizeof missing, "%s/nonexistent", f->dir);
  assert_int_equal(csc1_token_store_remove(missing, err, sizeof err), CSC1_TS_EIO);
  assert_non_null(strstr(err, "nonexistent"));
}

static void parse_refuses_garbage(void **state) {
  csc1_stored_login l;
  const char *bad[] = {"",
                       "null",
                       "[]",
                       "{}",
                       "{\"version\":2,\"issuer\":\"a\",\"client_id\":\"b\"}",
                       "{\"version\":1,\"issuer\":1,\"client_id\":\"b\"}",
                       "{\"version\":1,\"issuer\":\"a\",\"client_id\":\"b\",\"aud\":[1]}",
                       "{\"version\":1,\"issuer\":\"a\",\"client_id\":\"b\",\"refresh_token\":{}}",
                       "{\"version\":1,\"version\":1,\"issuer\":\"a\",\"client_id\":\"b\"}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(csc1_token_store_parse(bad[i], strlen(bad[i]), &l), -1);
  const char *good = "{\"version\":1,\"issuer\":\"a\",\"client_id\":\"b\"}";
  assert_int_equal(csc1_token_store_parse(good, strlen(good), &l), 0);
  assert_null(l.refresh_token);
  csc1_stored_login_free(&l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(prepare_creates_0700_and_tightens, setup, teardown),
      cmocka_unit_test_setup_teardown(save_load_roundtrip_0600, setup, teardown),
      cmocka_unit_test_setup_teardown(loose_mode_is_tightened_on_load, setup, teardown),
      cmocka_unit_test_setup_teardown(corrupt_file_is_kept_aside, setup, teardown),
      cmocka_unit_test_setup_teardown(unreadable_file_is_kept_aside, setup, teardown),
      cmocka_unit_test_setup_teardown(remove_is_idempotent, setup, teardown),
      cmocka_unit_test(parse_refuses_garbage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
