/* HTML form extraction for mcx-login's headless login: the forms of a page,
 * with their action, method and the inputs a browser would submit without
 * a user touching them (hidden and pre-filled inputs).
 *
 * Minimal and robust rather than complete: a tag scanner, not an HTML
 * parser. It skips comments and the contents of <script>, <style> and
 * <textarea>; attribute values may be double-, single- or unquoted and have
 * their character references decoded (&amp; &lt; &gt; &quot; &#39; &#NN;
 * &#xNN;). Inputs belong to the <form> they appear in. Unchecked checkboxes
 * and radios, and inputs without a name, are not submitted. Bounded: at most
 * MCX_FORMS_MAX forms of MCX_FORM_FIELDS_MAX fields. */
#ifndef MCX_FORMS_H
#define MCX_FORMS_H

#include <stddef.h>

#define MCX_FORMS_MAX 16
#define MCX_FORM_FIELDS_MAX 64

typedef struct mcx_form_field {
  char *name, *value, *type; /* type lower case; "text" when absent */
} mcx_form_field;

typedef struct mcx_form {
  char *action; /* as written (decoded); "" when absent: the page's own URL */
  char *method; /* lower case; "get" when absent */
  char *id;     /* or NULL */
  mcx_form_field fields[MCX_FORM_FIELDS_MAX];
  size_t n_fields;
} mcx_form;

typedef struct mcx_forms {
  mcx_form forms[MCX_FORMS_MAX];
  size_t n;
} mcx_forms;

/* Fills out from html[0..len). 0, or -1 when out of memory (out is still
 * safe to free). */
int mcx_forms_parse(const char *html, size_t len, mcx_forms *out);
void mcx_forms_free(mcx_forms *f);

/* The first form with a field of that name, or NULL. */
const mcx_form *mcx_forms_with_field(const mcx_forms *f, const char *name);
/* The field of that name in form, or NULL. */
const mcx_form_field *mcx_form_field_get(const mcx_form *form, const char *name);

/* Decodes the character references of s[0..n) into a new string (unknown
 * ones are kept as written). NULL when out of memory. */
char *mcx_html_unescape(const char *s, size_t n);

#endif
