/* Fuzzes mcx-login's HTML form extraction (device/forms.c), which reads the
 * IdMS's login and consent pages.
 *
 * Each input is parsed twice:
 *   1. as a page: no crash, leak or UB; the result stays within its bounds
 *      (MCX_FORMS_MAX forms of MCX_FORM_FIELDS_MAX fields); every form has
 *      an action and a lower-case method, every field a non-empty name, a
 *      value and a lower-case type (never a button, never an unchecked
 *      checkbox or radio); mcx_forms_with_field finds a form holding each
 *      field; mcx_html_unescape of the whole input stays within its buffer.
 *   2. as a round trip: the input becomes an action, a field name and a
 *      value (split at the first two NUL bytes), written into a page the way
 *      a server escapes attribute values (&amp; &lt; &gt; &quot; &#39;,
 *      inside double quotes) among decoys (a comment, a script holding a
 *      <form>, an unchecked checkbox); the parser must give back exactly one
 *      form with exactly that action, method "post", and the field with
 *      exactly that name and value. */
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/forms.h"
#include "driver.h"

#define HARNESS "fuzz_forms"

static void check_lower(const char *what, const char *s) {
  for (const char *c = s; *c; c++)
    if (tolower((unsigned char)*c) != (unsigned char)*c)
      fz_fail(HARNESS ": %s \"%s\" is not lower case", what, s);
}

static void check_page(const uint8_t *data, size_t size) {
  mcx_forms f;
  if (mcx_forms_parse((const char *)data, size, &f) != 0)
    fz_fail(HARNESS ": mcx_forms_parse failed without running out of memory");
  if (f.n > MCX_FORMS_MAX)
    fz_fail(HARNESS ": %zu forms", f.n);
  for (size_t i = 0; i < f.n; i++) {
    const mcx_form *form = &f.forms[i];
    if (!form->action || !form->method || form->n_fields > MCX_FORM_FIELDS_MAX)
      fz_fail(HARNESS ": form %zu: no action or method, or %zu fields", i, form->n_fields);
    check_lower("method", form->method);
    for (size_t k = 0; k < form->n_fields; k++) {
      const mcx_form_field *fl = &form->fields[k];
      if (!fl->name || !fl->value || !fl->type)
        fz_fail(HARNESS ": form %zu field %zu incomplete", i, k);
      check_lower("type", fl->type);
      if (!strcmp(fl->type, "submit") || !strcmp(fl->type, "button") ||
          !strcmp(fl->type, "image") || !strcmp(fl->type, "reset") || !strcmp(fl->type, "file"))
        fz_fail(HARNESS ": a %s input would be submitted", fl->type);
      const mcx_form *holder = mcx_forms_with_field(&f, fl->name);
      if (!holder || !mcx_form_field_get(holder, fl->name))
        fz_fail(HARNESS ": field \"%s\" not found again", fl->name);
    }
  }
  mcx_forms_free(&f);
  char *u = mcx_html_unescape((const char *)data, size);
  if (!u)
    fz_fail(HARNESS ": mcx_html_unescape: out of memory");
  /* It writes a NUL at the end; bytes before it may be NUL too (input). */
  free(u);
}

/* Appends s[0..n), escaped for a double-quoted attribute value. */
static size_t escape(char *w, const uint8_t *s, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *e = NULL;
    switch (s[i]) {
    case '&':
      e = "&amp;";
      break;
    case '<':
      e = "&lt;";
      break;
    case '>':
      e = "&gt;";
      break;
    case '"':
      e = "&quot;";
      break;
    case '\'':
      e = "&#39;";
      break;
    }
    if (e) {
      memcpy(w + k, e, strlen(e));
      k += strlen(e);
    } else {
      w[k++] = (char)s[i];
    }
  }
  return k;
}

static void check_round_trip(const uint8_t *data, size_t size) {
  const uint8_t *part[3] = {data, NULL, NULL};
  size_t len[3] = {size, 0, 0};
  for (int k = 0; k < 2; k++) {
    const uint8_t *nul = memchr(part[k], 0, len[k]);
    if (!nul)
      return;
    part[k + 1] = nul + 1;
    len[k + 1] = len[k] - (size_t)(nul + 1 - part[k]);
    len[k] = (size_t)(nul - part[k]);
  }
  if (len[1] == 0 || memchr(part[2], 0, len[2]))
    return; /* no name, or a NUL in the value: not a C string */
  static const char *const pieces[] = {
      ("<!doctype html><!-- <form action=\"/decoy\"> --><script>var s = '<form "
       "action=x><input name=y>';</script><form method=\"POST\" action=\""),
      "\"><input type=\"checkbox\" name=\"unchecked\"><input type=\"hidden\" name=\"",
      "\" value=\"", "\"></form>"};
  char *page = malloc(6 * size + 512), *w = page;
  if (!page)
    fz_fail(HARNESS ": out of memory");
  for (int k = 0; k < 3; k++) {
    w += sprintf(w, "%s", pieces[k]);
    w += escape(w, part[k], len[k]);
  }
  w += sprintf(w, "%s", pieces[3]);
  mcx_forms f;
  if (mcx_forms_parse(page, (size_t)(w - page), &f) != 0)
    fz_fail(HARNESS ": round trip: parse failed");
  if (f.n != 1 || f.forms[0].n_fields != 1)
    fz_fail(HARNESS ": round trip: %zu forms, %zu fields; expected 1 and 1", f.n,
            f.n ? f.forms[0].n_fields : 0);
  const mcx_form *form = &f.forms[0];
  const mcx_form_field *fl = &form->fields[0];
  if (strlen(form->action) != len[0] || memcmp(form->action, part[0], len[0]) != 0 ||
      strcmp(form->method, "post") != 0)
    fz_fail(HARNESS ": round trip: action or method changed");
  if (strlen(fl->name) != len[1] || memcmp(fl->name, part[1], len[1]) != 0)
    fz_fail(HARNESS ": round trip: the field name changed");
  if (strlen(fl->value) != len[2] || memcmp(fl->value, part[2], len[2]) != 0 ||
      strcmp(fl->type, "hidden") != 0)
    fz_fail(HARNESS ": round trip: the value changed");
  mcx_forms_free(&f);
  free(page);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) { return fz_initialize(argc, argv); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 64 * 1024)
    return -1;
  check_page(data, size);
  check_round_trip(data, size);
  return 0;
}
