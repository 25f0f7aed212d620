/* HTML form extraction. See forms.h. */
#include "device/forms.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ATTRS_MAX 32

typedef struct attr {
  const char *name, *value; /* into the page; value NULL when absent */
  size_t name_len, value_len;
} attr;

typedef struct tag {
  const char *name;
  size_t name_len;
  bool closing;
  attr a[ATTRS_MAX];
  size_t n;
} tag;

/* Appends the UTF-8 encoding of code point cp. */
static size_t put_utf8(char *w, unsigned long cp) {
  if (cp < 0x80)
    return (size_t)(w[0] = (char)cp, 1);
  if (cp < 0x800) {
    w[0] = (char)(0xC0 | (cp >> 6));
    w[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    w[0] = (char)(0xE0 | (cp >> 12));
    w[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    w[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  w[0] = (char)(0xF0 | (cp >> 18));
  w[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  w[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  w[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

char *mcx_html_unescape(const char *s, size_t n) {
  static const struct {
    const char *name;
    char c;
  } named[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'}, {"apos;", '\''}};
  char *out = malloc(n + 1), *w = out;
  if (!out)
    return NULL;
  for (size_t i = 0; i < n;) {
    if (s[i] != '&') {
      *w++ = s[i++];
      continue;
    }
    bool done = false;
    for (size_t k = 0; k < sizeof named / sizeof named[0] && !done; k++) {
      size_t l = strlen(named[k].name);
      if (n - i - 1 >= l && strncmp(s + i + 1, named[k].name, l) == 0) {
        *w++ = named[k].c;
        i += 1 + l;
        done = true;
      }
    }
    if (!done && i + 2 < n && s[i + 1] == '#') {
      bool hex = s[i + 2] == 'x' || s[i + 2] == 'X';
      size_t j = i + 2 + (hex ? 1 : 0);
      unsigned long cp = 0;
      size_t digits = 0;
      while (j < n && digits < 7 &&
             (hex ? isxdigit((unsigned char)s[j]) : isdigit((unsigned char)s[j]))) {
        cp =
            cp * (hex ? 16 : 10) + (unsigned long)(isdigit((unsigned char)s[j])
                                                       ? s[j] - '0'
                                                       : (tolower((unsigned char)s[j]) - 'a' + 10));
        j++, digits++;
      }
      if (digits && j < n && s[j] == ';' && cp > 0 && cp <= 0x10FFFF &&
          !(cp >= 0xD800 && cp <= 0xDFFF)) {
        w += put_utf8(w, cp); /* never longer than the reference (>= 4 bytes) */
        i = j + 1;
        done = true;
      }
    }
    if (!done)
      *w++ = s[i++];
  }
  *w = '\0';
  return out;
}

static bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

static bool name_is(const char *s, size_t n, const char *lit) {
  return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Parses the tag starting at p (just after '<') up to its '>'. Returns the
 * position after '>', or end when unterminated. */
static const char *scan_tag(const char *p, const char *end, tag *t) {
  memset(t, 0, sizeof *t);
  if (p < end && *p == '/')
    t->closing = true, p++;
  t->name = p;
  while (p < end && !is_space(*p) && *p != '>' && *p != '/')
    p++;
  t->name_len = (size_t)(p - t->name);
  while (p < end && *p != '>') {
    while (p < end && (is_space(*p) || *p == '/'))
      p++;
    if (p >= end || *p == '>')
      break;
    attr a = {.name = p};
    while (p < end && !is_space(*p) && *p != '>' && *p != '=' && *p != '/')
      p++;
    a.name_len = (size_t)(p - a.name);
    while (p < end && is_space(*p))
      p++;
    if (p < end && *p == '=') {
      p++;
      while (p < end && is_space(*p))
        p++;
      if (p < end && (*p == '"' || *p == '\'')) {
        char q = *p++;
        a.value = p;
        while (p < end && *p != q)
          p++;
        a.value_len = (size_t)(p - a.value);
        if (p < end)
          p++;
      } else {
        a.value = p;
        while (p < end && !is_space(*p) && *p != '>')
          p++;
        a.value_len = (size_t)(p - a.value);
      }
    }
    if (a.name_len == 0) { /* a stray character: step over it */
      p++;
      continue;
    }
    if (t->n < ATTRS_MAX)
      t->a[t->n++] = a;
  }
  return p < end ? p + 1 : end;
}

static const attr *get_attr(const tag *t, const char *name) {
  for (size_t i = 0; i < t->n; i++)
    if (name_is(t->a[i].name, t->a[i].name_len, name))
      return &t->a[i];
  return NULL;
}

/* The attribute's decoded value; dflt (copied) when absent; lower-cased if asked. */
static char *attr_value(const tag *t, const char *name, const char *dflt, bool lower) {
  const attr *a = get_attr(t, name);
  char *v = a && a->value ? mcx_html_unescape(a->value, a->value_len)
                          : (a || dflt ? strdup(a ? "" : dflt) : NULL);
  if (v && lower)
    for (char *c = v; *c; c++)
      *c = (char)tolower((unsigned char)*c);
  return v;
}

/* Skips to just after the closing tag of a raw-text element. */
static const char *skip_raw(const char *p, const char *end, const char *name) {
  size_t n = strlen(name);
  for (; p + n + 2 <= end; p++)
    if (p[0] == '<' && p[1] == '/' && strncasecmp(p + 2, name, n) == 0) {
      const char *gt = memchr(p, '>', (size_t)(end - p));
      return gt ? gt + 1 : end;
    }
  return end;
}

static int add_input(mcx_form *f, const tag *t) {
  const attr *name = get_attr(t, "name");
  if (!name || !name->value || name->value_len == 0 || f->n_fields >= MCX_FORM_FIELDS_MAX)
    return 0;
  char *type = attr_value(t, "type", "text", true);
  if (!type)
    return -1;
  bool checkable = strcmp(type, "checkbox") == 0 || strcmp(type, "radio") == 0;
  bool button = strcmp(type, "submit") == 0 || strcmp(type, "button") == 0 ||
                strcmp(type, "image") == 0 || strcmp(type, "reset") == 0 ||
                strcmp(type, "file") == 0;
  if (button || (checkable && !get_attr(t, "checked"))) {
    free(type);
    return 0;
  }
  mcx_form_field *fl = &f->fields[f->n_fields];
  fl->type = type;
  fl->name = mcx_html_unescape(name->value, name->value_len);
  fl->value = attr_value(t, "value", checkable ? "on" : "", false);
  f->n_fields++;
  return fl->name && fl->value ? 0 : -1;
}

int mcx_forms_parse(const char *html, size_t len, mcx_forms *out) {
  memset(out, 0, sizeof *out);
  const char *p = html, *end = html + len;
  mcx_form *cur = NULL;
  while (p < end) {
    const char *lt = memchr(p, '<', (size_t)(end - p));
    if (!lt)
      break;
    p = lt + 1;
    if (end - p >= 3 && strncmp(p, "!--", 3) == 0) {
      const char *c = p + 3;
      while (c + 3 <= end && strncmp(c, "-->", 3) != 0)
        c++;
      p = c + 3 <= end ? c + 3 : end;
      continue;
    }
    if (p < end && (*p == '!' || *p == '?')) { /* doctype, processing instruction */
      const char *gt = memchr(p, '>', (size_t)(end - p));
      p = gt ? gt + 1 : end;
      continue;
    }
    if (p >= end || !(isalpha((unsigned char)*p) || *p == '/'))
      continue; /* a lone '<' in text */
    tag t;
    p = scan_tag(p, end, &t);
    if (t.closing) {
      if (name_is(t.name, t.name_len, "form"))
        cur = NULL;
    } else if (name_is(t.name, t.name_len, "script") || name_is(t.name, t.name_len, "style") ||
               name_is(t.name, t.name_len, "textarea")) {
      char name[16] = {0};
      memcpy(name, t.name, t.name_len < sizeof name - 1 ? t.name_len : sizeof name - 1);
      p = skip_raw(p, end, name);
    } else if (name_is(t.name, t.name_len, "form")) {
      if (out->n >= MCX_FORMS_MAX) {
        cur = NULL;
        continue;
      }
      cur = &out->forms[out->n++];
      cur->action = attr_value(&t, "action", "", false);
      cur->method = attr_value(&t, "method", "get", true);
      cur->id = attr_value(&t, "id", NULL, false);
      if (!cur->action || !cur->method)
        return -1;
    } else if (cur && name_is(t.name, t.name_len, "input")) {
      if (add_input(cur, &t) != 0)
        return -1;
    }
  }
  return 0;
}

void mcx_forms_free(mcx_forms *f) {
  for (size_t i = 0; i < f->n; i++) {
    mcx_form *form = &f->forms[i];
    free(form->action);
    free(form->method);
    free(form->id);
    for (size_t k = 0; k < form->n_fields; k++) {
      free(form->fields[k].name);
      free(form->fields[k].value);
      free(form->fields[k].type);
    }
  }
  memset(f, 0, sizeof *f);
}

const mcx_form_field *mcx_form_field_get(const mcx_form *form, const char *name) {
  for (size_t k = 0; k < form->n_fields; k++)
    if (strcmp(form->fields[k].name, name) == 0)
      return &form->fields[k];
  return NULL;
}

const mcx_form *mcx_forms_with_field(const mcx_forms *f, const char *name) {
  for (size_t i = 0; i < f->n; i++)
    if (mcx_form_field_get(&f->forms[i], name))
      return &f->forms[i];
  return NULL;
}
