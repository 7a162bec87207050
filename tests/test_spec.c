// Model specs: the shipped specs, nanochat's depth dial, validation errors.
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/spec.h"
#include "tests/support/model_util.h"

static nc_model_spec load(const char *name) {
  char rel[128], path[1024];
  snprintf(rel, sizeof rel, "models/specs/%s.xml", name);
  nc_model_spec s;
  nc_status st = nc_spec_load(nc_test_path(path, sizeof path, rel), &s);
  cr_assert_null(st, "%s: %s", name, nc_status_msg(st));
  return s;
}

Test(spec, depth_dial_matches_nanochat) {
  // nanochat: d12 768/6, d20 1280/10, d26 1664/13, d32 2048/16 (head_dim 128)
  struct { const char *n; int dim, heads; } want[] = {
      {"d4", 256, 2}, {"d6", 384, 3}, {"d8", 512, 4}, {"d12", 768, 6}, {"d20", 1280, 10}, {"d26", 1664, 13}, {"d32", 2048, 16}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    nc_model_spec s = load(want[i].n);
    cr_expect_eq(s.model_dim, want[i].dim, "%s dim %d", want[i].n, s.model_dim);
    cr_expect_eq(s.n_head, want[i].heads, "%s heads %d", want[i].n, s.n_head);
    cr_expect_eq(s.n_kv_head, s.n_head);
    cr_expect_eq(s.rope_base, 10000.0);
    cr_expect_eq(s.softcap, 15.0);
  }
  nc_model_spec t = load("tiny-all");
  cr_assert_eq(t.model_dim, 32);
  cr_assert(t.value_embeds && t.smear && t.backout && t.resid_lambdas);
  cr_assert_eq(t.qk_scale, 1.2);
}

Test(spec, windows_and_value_embed_layers) {
  nc_model_spec t = load("tiny-all");  // depth 4, SSSL, short 8, seq 16
  int w[4] = {8, 8, 8, 16};
  for (int i = 0; i < 4; i++) cr_expect_eq(nc_spec_window(&t, i), w[i]);
  cr_expect(!nc_spec_has_ve(&t, 0) && nc_spec_has_ve(&t, 1) && !nc_spec_has_ve(&t, 2) && nc_spec_has_ve(&t, 3));
  nc_model_spec s;
  nc_spec_defaults(&s);
  snprintf(s.window_pattern, sizeof s.window_pattern, "SSSL");
  s.depth = 12;
  cr_assert_null(nc_spec_finalize(&s));
  // nanochat at seq 2048: w = 512 and a query sees keys [p-512, p]: 513 tokens
  cr_expect_eq(nc_spec_window(&s, 0), 513);
  cr_expect_eq(nc_spec_window(&s, 3), 2048);
  cr_expect_eq(nc_spec_window(&s, 11), 2048, "the last layer is always L");
}

Test(spec, xml_round_trip) {
  nc_model_spec t = load("tiny-all"), u;
  char *xml;
  cr_assert_null(nc_spec_to_xml(&t, &xml));
  cr_assert_null(nc_spec_parse(xml, strlen(xml), "rt", &u));
  cr_assert(!memcmp(&t, &u, sizeof t), "spec survives to_xml -> parse");
  free(xml);
}

static void bad(const char *xml, const char *words) {
  nc_model_spec s;
  nc_status st = nc_spec_parse(xml, strlen(xml), "bad.xml", &s);
  cr_assert_not_null(st, "accepted: %s", xml);
  cr_expect(strstr(nc_status_msg(st), words), "message '%s' lacks '%s'", nc_status_msg(st), words);
  nc_status_free(st);
}

#define HEAD "<?xml version=\"1.0\"?>\n<model version=\"1\" name=\"x\">\n"
Test(spec, bad_specs_are_named) {
  bad("", "malformed XML");
  bad(HEAD "<dims depth=\"4\"", "bad.xml:");
  bad("<graph/>", "root element must be <model>");
  bad("<model version=\"2\"><dims depth=\"4\"/></model>", "version 2 is not supported");
  bad(HEAD "</model>", "<dims> is required");
  bad(HEAD "<dims depth=\"four\"/></model>", "<dims> attribute depth: expected an integer, got 'four'");
  bad(HEAD "<dims depth=\"99999999999\"/></model>", "attribute depth");
  bad(HEAD "<dims depth=\"0\"/></model>", "depth = 0 is outside 1..256");
  bad(HEAD "<dims depth=\"4\" head_dim=\"7\"/></model>", "head_dim = 7 must be even");
  bad(HEAD "<dims depth=\"4\" wdith=\"7\"/></model>", "unknown attribute 'wdith'");
  bad(HEAD "<dims depth=\"4\" n_kv_head=\"3\"/></model>", "n_kv_head = 3 must divide n_head = 2");
  bad(HEAD "<dims depth=\"4\"/><dims depth=\"4\"/></model>", "appears twice");
  bad(HEAD "<dims depth=\"4\"/><mlp/></model>", "unknown element <mlp>");
  bad(HEAD "<dims depth=\"4\"/><attention window_pattern=\"SXL\"/></model>", "only S and L");
  bad(HEAD "<dims depth=\"4\"/><attention rope_base=\"nan\"/></model>", "expected a finite number");
  bad(HEAD "<dims depth=\"4\"/><features smear=\"maybe\"/></model>", "expected on or off, got 'maybe'");
  bad(HEAD "<dims depth=\"4\"/><init scheme=\"2019\"/></model>", "init scheme '2019' is unknown");
  bad(HEAD "<dims depth=\"4\"><x/></dims></model>", "takes no child elements");
  bad("<model version=\"1\" name=\"\xff\"/>", "invalid UTF-8");
  bad("<!DOCTYPE model [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><model version=\"1\" name=\"&e;\"><dims depth=\"4\"/></model>", "");
}

Test(spec, deep_nesting_is_rejected_cleanly) {
  static char buf[300000];
  size_t o = (size_t)snprintf(buf, sizeof buf, HEAD);
  for (int i = 0; i < 20000; i++) o += (size_t)snprintf(buf + o, sizeof buf - o, "<a>");
  nc_model_spec s;
  nc_status st = nc_spec_parse(buf, o, "deep.xml", &s);
  cr_assert_not_null(st);
  nc_status_free(st);
}
