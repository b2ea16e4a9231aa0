/* test_embed_model - the `model` embedder's text form (embed.h): the
 * request and the recorded forms parse, format round-trips, every bad key
 * or value is refused naming it, names are made safe, the identity hash
 * depends on every field; and a collection config takes only the recorded
 * form. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coll.h"
#include "embed.h"

static void test_parse_format(void) {
  embed_model_opts o;
  ctxd_error e;
  char buf[256];
  CHECK(embed_is_model("model"));
  CHECK(embed_is_model("model:pooling=mean"));
  CHECK(!embed_is_model("models"));
  CHECK(!embed_is_model("hash"));
  CHECK_EQ_INT(embed_model_parse("model", &o, &e), 0);
  CHECK(!o.identified);
  CHECK_EQ_INT((int)o.max_tokens, 0);
  CHECK_EQ_INT(embed_model_parse("model:max_tokens=64,pooling=cls", &o, &e), 0);
  CHECK_EQ_INT((int)o.max_tokens, 64);
  CHECK_EQ_INT(o.pooling, 2);
  CHECK(!o.identified);
  const char *full =
      "model:name=ctxd mini_1.0,dim=512,hash=0a1b2c3d,max_tokens=512,"
      "pooling=model";
  CHECK_EQ_INT(embed_model_parse(full, &o, &e), 0);
  CHECK(o.identified);
  CHECK_EQ_STR(o.name, "ctxd mini_1.0");
  CHECK_EQ_INT((int)o.dim, 512);
  CHECK(o.hash == 0x0a1b2c3du);
  embed_model_format(&o, buf, sizeof buf);
  CHECK_EQ_STR(buf, full);
  /* keys in another order read the same */
  CHECK_EQ_INT(embed_model_parse("model:hash=0a1b2c3d,pooling=model,"
                                 "max_tokens=512,dim=512,name=ctxd mini_1.0",
                                 &o, &e),
               0);
  embed_model_format(&o, buf, sizeof buf);
  CHECK_EQ_STR(buf, full);
}

static void test_errors(void) {
  static const struct {
    const char *s, *says;
  } bad[] = {
      {"hash", "is not"},
      {"model:size=3", "unknown key"},
      {"model:pooling", "no value"},
      {"model:pooling=max", "pooling"},
      {"model:pooling=mean,pooling=cls", "twice"},
      {"model:max_tokens=0", "max_tokens"},
      {"model:max_tokens=32769", "max_tokens"},
      {"model:max_tokens=64,", "trailing comma"},
      {"model:name=a,dim=4", "go together"},
      {"model:name=a,b,dim=4,hash=00000000", "unknown key"},
      {"model:name=a,dim=0,hash=00000000", "dim"},
      {"model:name=a,dim=65537,hash=00000000", "dim"},
      {"model:name=a,dim=4,hash=0000000", "hash"},
      {"model:name=a,dim=4,hash=0000000G", "hash"},
      {"model:name=a/b,dim=4,hash=00000000", "name"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    embed_model_opts o;
    ctxd_error e;
    memset(&o, 0x5a, sizeof o);
    int rc = embed_model_parse(bad[i].s, &o, &e);
    CHECK_EQ_INT(rc, CTXD_EINVAL);
    if (!strstr(e.msg, bad[i].says))
      fprintf(stderr, "%s: \"%s\" lacks \"%s\"\n", bad[i].s, e.msg,
              bad[i].says);
    CHECK(strstr(e.msg, bad[i].says) != NULL);
    CHECK(o.dim == 0x5a5a5a5au); /* untouched on error */
  }
}

static void test_name_and_id(void) {
  embed_model_opts o;
  char longname[200];
  memset(longname, 'x', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  embed_model_set_name(&o, "Qwen2.5, 0.5B=Instruct/q8");
  CHECK_EQ_STR(o.name, "Qwen2.5_ 0.5B_Instruct_q8");
  embed_model_set_name(&o, longname);
  CHECK_EQ_INT((int)strlen(o.name), EMBED_MODEL_NAME_MAX);
  embed_model_set_name(&o, "");
  CHECK_EQ_STR(o.name, "unnamed");
  uint64_t sz[7] = {64, 2, 4, 2, 50257, 3300000, 13000000};
  uint32_t h = embed_model_id("m", "llama", "gguf:gpt-2", sz);
  CHECK_EQ_INT((int)(h == embed_model_id("m", "llama", "gguf:gpt-2", sz)), 1);
  CHECK(h != embed_model_id("m2", "llama", "gguf:gpt-2", sz));
  CHECK(h != embed_model_id("m", "qwen2", "gguf:gpt-2", sz));
  CHECK(h != embed_model_id("m", "llama", "gguf:qwen2", sz));
  /* field boundaries count */
  CHECK(embed_model_id("ab", "c", "t", sz) != embed_model_id("a", "bc", "t", sz));
  for (int i = 0; i < 7; i++) {
    uint64_t s2[7];
    memcpy(s2, sz, sizeof s2);
    s2[i]++;
    CHECK(h != embed_model_id("m", "llama", "gguf:gpt-2", s2));
  }
}

static void test_coll_config(void) {
  coll_config c;
  ctxd_error e;
  memset(&c, 0, sizeof c);
  snprintf(c.name, sizeof c.name, "m");
  snprintf(c.embedder, sizeof c.embedder,
           "model:name=x,dim=48,hash=deadbeef,max_tokens=128,pooling=mean");
  snprintf(c.index_spec, sizeof c.index_spec, "Flat");
  c.metric = VINDEX_IP;
  c.chunk_max_tokens = 256;
  CHECK_EQ_INT(coll_config_check(&c, &e), 0);
  CHECK_EQ_INT((int)c.dim, 48);
  char text[STORE_COLL_CONFIG_MAX];
  coll_config_format(&c, text, sizeof text);
  coll_config back;
  CHECK_EQ_INT(coll_config_parse(text, &back, &e), 0);
  CHECK_EQ_STR(back.embedder, c.embedder);
  CHECK_EQ_INT((int)back.dim, 48);
  /* the request form is the daemon's to resolve, never stored */
  snprintf(c.embedder, sizeof c.embedder, "model");
  CHECK_EQ_INT(coll_config_check(&c, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "records the model") != NULL);
}

int main(void) {
  test_parse_format();
  test_errors();
  test_name_and_id();
  test_coll_config();
  return check_report("test_embed_model");
}
