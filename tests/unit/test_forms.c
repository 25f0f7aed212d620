/* Unit tests for device/forms.c: form extraction from an IdMS's pages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "device/forms.h"

static mcx_forms *parse(const char *html) {
  mcx_forms *f = malloc(sizeof *f);
  assert_non_null(f);
  assert_int_equal(mcx_forms_parse(html, strlen(html), f), 0);
  return f;
}

static void done(mcx_forms *f) {
  mcx_forms_free(f);
  free(f);
}

/* oidc-provider 8.x devInteractions login page, as rendered. */
static void oidc_provider_login_page(void **state) {
  mcx_forms *f =
      parse("<!DOCTYPE html><html><head><style>input[type=text]{a:b}</style></head><body>"
            "<div class=\"container\"><h1>Sign-in</h1>\n"
            "<form autocomplete=\"off\" action=\"/interaction/abc_DEF-1\" method=\"post\">\n"
            "  <input type=\"hidden\" name=\"prompt\" value=\"login\"/>\n"
            "  <input required type=\"text\" name=\"login\" placeholder=\"Enter any login\" "
            "autofocus=\"on\">\n"
            "  <input required type=\"password\" name=\"password\" placeholder=\"and password\" >\n"
            "  <button type=\"submit\" class=\"login login-submit\">Sign-in</button>\n"
            "</form></div></body></html>");
  assert_int_equal(f->n, 1);
  const mcx_form *form = mcx_forms_with_field(f, "password");
  assert_non_null(form);
  assert_string_equal(form->action, "/interaction/abc_DEF-1");
  assert_string_equal(form->method, "post");
  assert_int_equal(form->n_fields, 3);
  assert_string_equal(mcx_form_field_get(form, "prompt")->value, "login");
  assert_string_equal(mcx_form_field_get(form, "prompt")->type, "hidden");
  assert_string_equal(mcx_form_field_get(form, "login")->value, "");
  assert_string_equal(mcx_form_field_get(form, "password")->type, "password");
  done(f);
}

static void consent_page(void **state) {
  mcx_forms *f = parse("<ul><li>scopes:</li></ul>\n"
                       "<form autocomplete=\"off\" action=\"/interaction/u2\" method=\"post\">\n"
                       "  <input type=\"hidden\" name=\"prompt\" value=\"consent\"/>\n"
                       "  <button autofocus type=\"submit\">Continue</button></form>");
  assert_int_equal(f->n, 1);
  assert_null(mcx_forms_with_field(f, "password"));
  assert_string_equal(mcx_form_field_get(&f->forms[0], "prompt")->value, "consent");
  done(f);
}

static void quoting_and_entities(void **state) {
  mcx_forms *f = parse("<FORM ACTION='/cb?a=1&amp;b=2' Method=POST id=f1>"
                       "<INPUT type=hidden name=q value=a&quot;b&#39;c&#x41;&#66;&bogus;>"
                       "<input name=\"u\" value=\"&lt;&gt;&amp;\" />"
                       "<input name='sp' value='two words'></form>");
  assert_int_equal(f->n, 1);
  const mcx_form *form = &f->forms[0];
  assert_string_equal(form->action, "/cb?a=1&b=2");
  assert_string_equal(form->method, "post");
  assert_string_equal(form->id, "f1");
  assert_string_equal(mcx_form_field_get(form, "q")->value, "a\"b'cAB&bogus;");
  assert_string_equal(mcx_form_field_get(form, "u")->value, "<>&");
  assert_string_equal(mcx_form_field_get(form, "sp")->value, "two words");
  done(f);
}

static void skips_comments_scripts_and_buttons(void **state) {
  mcx_forms *f = parse("<!-- <form action=/fake><input name=x value=1></form> -->"
                       "<script>var s = '<form action=/js><input name=y>';</script>"
                       "<form><input type=submit name=go value=Go>"
                       "<input type=checkbox name=remember>"
                       "<input type=checkbox name=agree checked>"
                       "<input value=noname>"
                       "<textarea name=t><input name=inside></textarea>"
                       "<input name=after value=1></form>"
                       "<input name=outside value=1>");
  assert_int_equal(f->n, 1);
  const mcx_form *form = &f->forms[0];
  assert_string_equal(form->action, "");
  assert_string_equal(form->method, "get");
  assert_int_equal(form->n_fields, 2);
  assert_string_equal(mcx_form_field_get(form, "agree")->value, "on");
  assert_string_equal(mcx_form_field_get(form, "after")->value, "1");
  assert_null(mcx_form_field_get(form, "go"));
  assert_null(mcx_form_field_get(form, "remember"));
  assert_null(mcx_form_field_get(form, "inside"));
  done(f);
}

static void truncated_and_hostile_input(void **state) {
  const char *bad[] = {"<form action=\"/x",
                       "<form><input name=\"a",
                       "<",
                       "<<<>>>",
                       "<!--",
                       "<script>",
                       "<form action=x><input name=a value=&#xFFFFFFFF;>",
                       "<form><input name=a value=&#0;>",
                       "< form >",
                       "</form></form>"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    mcx_forms *f = parse(bad[i]);
    done(f);
  }
  /* many forms: bounded */
  char *many = malloc(40 * 24 + 1);
  many[0] = '\0';
  for (int i = 0; i < 40; i++)
    strcat(many, "<form action=/a></form>");
  mcx_forms *f = parse(many);
  assert_int_equal(f->n, MCX_FORMS_MAX);
  done(f);
  free(many);
}

static void two_forms_first_with_field(void **state) {
  mcx_forms *f = parse("<form action=/search><input name=q></form>"
                       "<form action=/login method=post><input name=login>"
                       "<input type=password name=password></form>");
  assert_int_equal(f->n, 2);
  assert_string_equal(mcx_forms_with_field(f, "password")->action, "/login");
  assert_string_equal(mcx_forms_with_field(f, "q")->action, "/search");
  assert_null(mcx_forms_with_field(f, "nothing"));
  done(f);
}

static void unescape_utf8(void **state) {
  char *s = mcx_html_unescape("&#233;&#x20AC;&#x1F600;", 23);
  assert_string_equal(s, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  free(s);
  s = mcx_html_unescape("&#xD800;&", 9); /* surrogates and a lone '&' stay as written */
  assert_string_equal(s, "&#xD800;&");
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(oidc_provider_login_page),
      cmocka_unit_test(consent_page),
      cmocka_unit_test(quoting_and_entities),
      cmocka_unit_test(skips_comments_scripts_and_buttons),
      cmocka_unit_test(truncated_and_hostile_input),
      cmocka_unit_test(two_forms_first_with_field),
      cmocka_unit_test(unescape_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
