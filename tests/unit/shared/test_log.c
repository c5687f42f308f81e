/* Unit tests for shared/log.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "shared/buf.h"
#include "shared/error.h"
#include "shared/log.h"

/* 2026-11-25T08:20:12.345Z */
#define FIXED_MS INT64_C(1795594812345)

static int64_t fixed_clock(void)
{
	return FIXED_MS;
}

static struct sp_log_config text_config(void)
{
	struct sp_log_config c = {SP_LOG_DEBUG, SP_LOG_TEXT, -1, fixed_clock, NULL};
	return c;
}

static struct sp_log_config json_config(void)
{
	struct sp_log_config c = {SP_LOG_DEBUG, SP_LOG_JSON, -1, fixed_clock, NULL};
	return c;
}

/* Formats one line into a fresh buffer and returns it as a heap string. */
static char *format(const struct sp_log_config *cfg, enum sp_log_level level, const char *msg,
		    const struct sp_log_field *fields, size_t count)
{
	struct sp_buf b;
	sp_buf_init(&b, 0);
	assert_int_equal(sp_log_format_line(cfg, FIXED_MS, level, msg, fields, count, &b), 0);
	char *s = strdup(sp_buf_cstr(&b));
	sp_buf_free(&b);
	assert_non_null(s);
	return s;
}

/* Parses a JSON line (newline included) and checks it is exactly one object. */
static json_t *parse_json_line(const char *line)
{
	size_t n = strlen(line);
	assert_true(n > 0 && line[n - 1] == '\n');
	assert_null(memchr(line, '\n', n - 1));
	json_error_t err;
	json_t *root = json_loadb(line, n - 1, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
	if (root == NULL)
		fail_msg("JSON did not parse: %s in %s", err.text, line);
	assert_true(json_is_object(root));
	return root;
}

static void test_text_line_exact(void **state)
{
	(void)state;
	struct sp_log_config c = text_config();
	const struct sp_log_field f[] = {
	    SP_LOG_STR("url", "https://controller.example.com:8443/v1"),
	    SP_LOG_STR("reason", "quoted value"),
	    SP_LOG_INT("port", -443),
	    SP_LOG_UINT("bytes", UINT64_MAX),
	    SP_LOG_BOOL("tls", 1),
	    SP_LOG_STR("empty", ""),
	    SP_LOG_STR("none", NULL),
	    SP_LOG_STR("eq", "a=b"),
	};
	char *s = format(&c, SP_LOG_INFO, "connector enrolled", f, sizeof(f) / sizeof(f[0]));
	assert_string_equal(s, "2026-11-25T08:20:12.345Z INFO connector enrolled "
			       "url=https://controller.example.com:8443/v1 "
			       "reason=\"quoted value\" port=-443 bytes=18446744073709551615 "
			       "tls=true empty=\"\" none=null eq=\"a=b\"\n");
	free(s);

	s = format(&c, SP_LOG_ERROR, "no fields", NULL, 0);
	assert_string_equal(s, "2026-11-25T08:20:12.345Z ERROR no fields\n");
	free(s);
	s = format(&c, SP_LOG_DEBUG, "d", NULL, 0);
	assert_string_equal(s, "2026-11-25T08:20:12.345Z DEBUG d\n");
	free(s);
	s = format(&c, SP_LOG_WARN, "w", NULL, 0);
	assert_string_equal(s, "2026-11-25T08:20:12.345Z WARN w\n");
	free(s);
}

static void test_text_escaping(void **state)
{
	(void)state;
	struct sp_log_config c = text_config();
	const struct sp_log_field f[] = {
	    SP_LOG_STR("v", "say \"hi\"\\ now\n\tx\x01"),
	    SP_LOG_STR("utf8", "caf\xc3\xa9"),
	    SP_LOG_STRN("bad", "a\xff\x00z", 4),
	};
	char *s = format(&c, SP_LOG_INFO, "line1\nline2 \\ \x1b[31m", f, 3);
	assert_string_equal(s, "2026-11-25T08:20:12.345Z INFO line1\\nline2 \\\\ \\x1b[31m "
			       "v=\"say \\\"hi\\\"\\\\ now\\n\\tx\\x01\" utf8=caf\xc3\xa9 "
			       "bad=\"a\xef\xbf\xbd\\x00z\"\n");
	free(s);
}

static void test_json_line_exact(void **state)
{
	(void)state;
	struct sp_log_config c = json_config();
	const struct sp_log_field f[] = {
	    SP_LOG_STR("url", "https://x.example/"),
	    SP_LOG_INT("port", 8443),
	    SP_LOG_UINT("n", 7),
	    SP_LOG_BOOL("ok", 0),
	    SP_LOG_STR("none", NULL),
	    SP_LOG_ERR(SP_ERR_TRUNCATED),
	};
	char *s = format(&c, SP_LOG_WARN, "hello", f, sizeof(f) / sizeof(f[0]));
	assert_string_equal(s, "{\"ts\":\"2026-11-25T08:20:12.345Z\",\"level\":\"warn\","
			       "\"msg\":\"hello\",\"url\":\"https://x.example/\",\"port\":8443,"
			       "\"n\":7,\"ok\":false,\"none\":null,\"error\":\"truncated\"}\n");
	json_t *root = parse_json_line(s);
	assert_int_equal(json_integer_value(json_object_get(root, "port")), 8443);
	assert_true(json_is_null(json_object_get(root, "none")));
	json_decref(root);
	free(s);
}

static void test_json_escaping_round_trip(void **state)
{
	(void)state;
	struct sp_log_config c = json_config();
	/* Every byte value once, as a value with an explicit length. */
	char all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (char)i;
	const char tricky[] = "q\" b\\ nl\n cr\r tab\t bs\b ff\f nul-free \x1f del\x7f "
			      "e\xc3\xa9 euro\xe2\x82\xac emoji\xf0\x9f\x94\x91 "
			      "overlong\xc0\xaf surrogate\xed\xa0\x80 big\xf4\x90\x80\x80 "
			      "cut\xe2\x82";
	const struct sp_log_field f[] = {
	    SP_LOG_STR("tricky", tricky),
	    SP_LOG_STRN("all", all, sizeof(all)),
	};
	char *s = format(&c, SP_LOG_INFO, "m\"sg\n", f, 2);
	json_t *root = parse_json_line(s);
	assert_string_equal(json_string_value(json_object_get(root, "msg")), "m\"sg\n");
	const char *t = json_string_value(json_object_get(root, "tricky"));
	assert_non_null(t);
	const char want[] = "q\" b\\ nl\n cr\r tab\t bs\b ff\f nul-free \x1f del\x7f "
			    "e\xc3\xa9 euro\xe2\x82\xac emoji\xf0\x9f\x94\x91 "
			    "overlong\xef\xbf\xbd\xef\xbf\xbd "
			    "surrogate\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
			    "big\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd "
			    "cut\xef\xbf\xbd\xef\xbf\xbd";
	assert_string_equal(t, want);
	/* The escapes themselves, as written. */
	assert_non_null(strstr(s, "\\u001f del\\u007f"));
	assert_non_null(strstr(s, "bs\\b ff\\f"));
	/* 0..127 come back as themselves (NUL included); 128..255 are each U+FFFD. */
	json_t *a = json_object_get(root, "all");
	assert_int_equal(json_string_length(a), 128 + 128 * 3);
	const char *av = json_string_value(a);
	for (int i = 0; i < 128; i++)
		assert_int_equal((unsigned char)av[i], i);
	assert_memory_equal(av + 128, "\xef\xbf\xbd", 3);
	json_decref(root);
	free(s);
}

static void test_secret_never_written(void **state)
{
	(void)state;
	const char secret[] = "hunter2-enrollment-secret";
	struct sp_log_config configs[2] = {text_config(), json_config()};
	for (int i = 0; i < 2; i++) {
		const struct sp_log_field f[] = {
		    SP_LOG_SECRET("enroll_token", secret),
		    SP_LOG_STR("user", "alice"),
		};
		char *s = format(&configs[i], SP_LOG_INFO, "enrolling", f, 2);
		assert_null(strstr(s, "hunter2"));
		assert_non_null(strstr(s, "[redacted]"));
		if (i == 0) {
			assert_non_null(strstr(s, " enroll_token=[redacted] user=alice\n"));
		} else {
			json_t *root = parse_json_line(s);
			assert_string_equal(
			    json_string_value(json_object_get(root, "enroll_token")), "[redacted]");
			json_decref(root);
		}
		free(s);
	}
	/* A secret field with a NULL value or another type is still just the mask. */
	struct sp_log_field weird = SP_LOG_INT("pin", 1234);
	weird.secret = 1;
	struct sp_log_config c = text_config();
	char *s = format(&c, SP_LOG_INFO, "x", &weird, 1);
	assert_string_equal(s, "2026-11-25T08:20:12.345Z INFO x pin=[redacted]\n");
	free(s);
}

static const char jws[] = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9."
			  "MEUCIQDx7bS3Qk0sX3v9pQ2d1cabcdefghij";
static const char pem[] = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n"
			  "-----END PRIVATE KEY-----\n";

static void test_credentials_auto_redacted(void **state)
{
	(void)state;
	struct sp_log_config c = json_config();
	char bearer[256], in_url[256], jwe[256];
	snprintf(bearer, sizeof(bearer), "Bearer %s", jws);
	snprintf(in_url, sizeof(in_url), "https://c.example/cb?grant=%s&x=1", jws);
	snprintf(jwe, sizeof(jwe), "eyJhbGciOiJFQ0RILUVTIn0..iv_iv_iv.ciphertext.%s",
		 "tag_tag_tag_tag_tag_tag");
	const struct sp_log_field f[] = {
	    SP_LOG_STR("auth", bearer),
	    SP_LOG_STR("jws", jws),
	    SP_LOG_STR("url", in_url),
	    SP_LOG_STR("jwe", jwe),
	    SP_LOG_STR("key", pem),
	    SP_LOG_STR("half", "PRIVATE KEY"),
	    SP_LOG_STRN("n", jws, sizeof(jws) - 1),
	};
	char *s = format(&c, SP_LOG_INFO, jws, f, sizeof(f) / sizeof(f[0]));
	assert_null(strstr(s, "MEUCIQ"));
	assert_null(strstr(s, "eyJ"));
	assert_null(strstr(s, "MIGHAgEA"));
	json_t *root = parse_json_line(s);
	const char *keys[] = {"msg", "auth", "jws", "url", "jwe", "key", "half", "n"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		assert_string_equal(json_string_value(json_object_get(root, keys[i])),
				    "[redacted]");
	json_decref(root);
	free(s);

	/* Things that only resemble the shapes are written as they are. */
	const struct sp_log_field plain[] = {
	    SP_LOG_STR("host", "connector-eu-west-1.prod.example-corporation-intranet"),
	    SP_LOG_STR("url", "https://controller.example.com:8443/v1/enroll?x=y.z"),
	    SP_LOG_STR("short", "eyJhbGci.x.abc"),
	    SP_LOG_STR("two", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9abcdefghijkl"),
	    SP_LOG_STR("begin", "-----BEGI"),
	};
	s = format(&c, SP_LOG_INFO, "m", plain, 5);
	root = parse_json_line(s);
	for (size_t i = 0; i < 5; i++)
		assert_string_equal(json_string_value(json_object_get(root, plain[i].key)),
				    plain[i].str);
	json_decref(root);
	free(s);
}

static void test_keys_sanitised(void **state)
{
	(void)state;
	struct sp_log_config c = json_config();
	char long_key[100];
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	const struct sp_log_field f[] = {
	    SP_LOG_INT("msg", 1),      SP_LOG_INT("level", 2),	   SP_LOG_INT("ts", 3),
	    SP_LOG_INT("a b\"c\n", 4), SP_LOG_INT("", 5),	   SP_LOG_INT(NULL, 6),
	    SP_LOG_INT(long_key, 7),   SP_LOG_INT("truncated", 8),
	};
	char *s = format(&c, SP_LOG_INFO, "m", f, sizeof(f) / sizeof(f[0]));
	assert_non_null(strstr(s, "\"msg\":\"m\",\"_msg\":1,\"_level\":2,\"_ts\":3,\"a_b_c_\":4,"
				  "\"_\":5,\"_\":6,\"kkkk"));
	assert_non_null(strstr(s, "\"_truncated\":8}"));
	/* The long key is cut to SP_LOG_KEY_MAX. */
	char cut[SP_LOG_KEY_MAX + 5];
	memset(cut, 'k', SP_LOG_KEY_MAX);
	memcpy(cut + SP_LOG_KEY_MAX, "\":7,", 5);
	assert_non_null(strstr(s, cut));
	free(s);
}

static void test_program_name(void **state)
{
	(void)state;
	struct sp_log_config c = text_config();
	c.program = "sallyport-connector";
	char *s = format(&c, SP_LOG_INFO, "up", NULL, 0);
	assert_string_equal(s, "2026-11-25T08:20:12.345Z INFO sallyport-connector: up\n");
	free(s);
	c.format = SP_LOG_JSON;
	s = format(&c, SP_LOG_INFO, "up", NULL, 0);
	assert_string_equal(s, "{\"ts\":\"2026-11-25T08:20:12.345Z\",\"level\":\"info\","
			       "\"program\":\"sallyport-connector\",\"msg\":\"up\"}\n");
	free(s);
	c.program = "";
	s = format(&c, SP_LOG_INFO, "up", NULL, 0);
	assert_null(strstr(s, "program"));
	free(s);
}

static void test_timestamps(void **state)
{
	(void)state;
	struct sp_log_config c = text_config();
	struct sp_buf b;
	sp_buf_init(&b, 0);
	const struct {
		int64_t ms;
		const char *want;
	} cases[] = {
	    {0, "1970-01-01T00:00:00.000Z"},
	    {-1, "1969-12-31T23:59:59.999Z"},
	    {951782400999, "2000-02-29T00:00:00.999Z"},
	    {INT64_MAX, "9999-12-31T23:59:59.999Z"},
	    {INT64_MIN, "0000-01-01T00:00:00.000Z"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sp_buf_reset(&b);
		assert_int_equal(sp_log_format_line(&c, cases[i].ms, SP_LOG_INFO, "t", NULL, 0, &b),
				 0);
		assert_memory_equal(b.data, cases[i].want, 24);
	}
	sp_buf_free(&b);
}

static void test_truncation(void **state)
{
	(void)state;
	char *big = malloc(20000);
	assert_non_null(big);
	memset(big, 'x', 19999);
	big[19999] = '\0';
	/* Newlines escape to two bytes; the cut must not split an escape. */
	char *nl = malloc(6000);
	assert_non_null(nl);
	memset(nl, '\n', 5999);
	nl[5999] = '\0';
	struct sp_log_config configs[2] = {text_config(), json_config()};
	for (int i = 0; i < 2; i++) {
		const struct sp_log_field f[] = {
		    SP_LOG_STR("first", "kept"),
		    SP_LOG_STR("big", big),
		    SP_LOG_STR("after", "dropped"),
		};
		char *s = format(&configs[i], SP_LOG_INFO, "m", f, 3);
		size_t n = strlen(s);
		assert_true(n <= SP_LOG_LINE_MAX);
		assert_true(n > SP_LOG_LINE_MAX - 64);
		assert_null(strstr(s, "dropped"));
		if (i == 0) {
			assert_non_null(strstr(s, " first=kept big=xxx"));
			assert_string_equal(s + n - 14, "x [truncated]\n");
		} else {
			json_t *root = parse_json_line(s);
			assert_true(json_is_true(json_object_get(root, "truncated")));
			assert_string_equal(json_string_value(json_object_get(root, "first")),
					    "kept");
			assert_null(json_object_get(root, "after"));
			json_decref(root);
		}
		free(s);

		/* A huge message, and one of escapes. */
		s = format(&configs[i], SP_LOG_INFO, big, f, 1);
		assert_true(strlen(s) <= SP_LOG_LINE_MAX);
		assert_null(strstr(s, "kept"));
		if (i == 1)
			json_decref(parse_json_line(s));
		free(s);
		s = format(&configs[i], SP_LOG_INFO, nl, NULL, 0);
		n = strlen(s);
		assert_true(n <= SP_LOG_LINE_MAX);
		if (i == 0)
			assert_string_equal(s + n - 15, "\\n [truncated]\n");
		else
			json_decref(parse_json_line(s));
		free(s);
	}
	free(big);
	free(nl);
}

static void test_small_buffer_and_bad_arguments(void **state)
{
	(void)state;
	struct sp_log_config c = json_config();
	uint8_t storage[300];
	struct sp_buf b;
	sp_buf_init_fixed(&b, storage, sizeof(storage));
	assert_int_equal(sp_buf_put(&b, "abc", 3), 0);
	/* 297 bytes of room: the line is cut to fit and stays valid JSON. */
	char big[1000];
	memset(big, 'y', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	const struct sp_log_field f = SP_LOG_STR("v", big);
	assert_int_equal(sp_log_format_line(&c, 0, SP_LOG_INFO, "m", &f, 1, &b), 0);
	assert_true(b.len <= sizeof(storage));
	assert_int_equal(b.data[b.len - 1], '\n');
	json_error_t err;
	json_t *root = json_loadb((const char *)storage + 3, b.len - 4, 0, &err);
	assert_non_null(root);
	json_decref(root);

	/*
	 * Messages ending right at the content limit (found by fuzz_log): the closing quote
	 * goes into the reserve and the next field must then count as cut, not wrap the
	 * room computation.
	 */
	for (size_t len = 150; len < 190; len++) {
		char msg[200];
		memset(msg, 'a', len);
		msg[len] = '\0';
		char value[120];
		memset(value, 'v', sizeof(value) - 1);
		value[sizeof(value) - 1] = '\0';
		const struct sp_log_field two[] = {SP_LOG_STR("k", value), SP_LOG_INT("n", 1)};
		uint8_t line[256];
		sp_buf_init_fixed(&b, line, sizeof(line));
		for (int format = 0; format < 2; format++) {
			c.format = (enum sp_log_format)format;
			sp_buf_reset(&b);
			assert_int_equal(sp_log_format_line(&c, 0, SP_LOG_INFO, msg, two, 2, &b),
					 0);
			assert_int_equal(line[b.len - 1], '\n');
			if (format == SP_LOG_JSON) {
				root = json_loadb((const char *)line, b.len - 1, 0, &err);
				assert_non_null(root);
				json_decref(root);
			}
		}
	}
	c.format = SP_LOG_JSON;

	/* Less than 256 bytes of room: refused, buffer unchanged. */
	sp_buf_init_fixed(&b, storage, 255);
	assert_int_equal(sp_log_format_line(&c, 0, SP_LOG_INFO, "m", NULL, 0, &b),
			 SP_ERR_TOO_LARGE);
	assert_int_equal(b.len, 0);

	struct sp_buf h;
	sp_buf_init(&h, 0);
	assert_int_equal(sp_log_format_line(&c, 0, (enum sp_log_level)4, "m", NULL, 0, &h),
			 SP_ERR_INVALID);
	assert_int_equal(sp_log_format_line(&c, 0, (enum sp_log_level) - 1, "m", NULL, 0, &h),
			 SP_ERR_INVALID);
	assert_int_equal(sp_log_format_line(&c, 0, SP_LOG_INFO, NULL, NULL, 0, &h), SP_ERR_INVALID);
	assert_int_equal(sp_log_format_line(&c, 0, SP_LOG_INFO, "m", NULL, 1, &h), SP_ERR_INVALID);
	c.format = (enum sp_log_format)2;
	assert_int_equal(sp_log_format_line(&c, 0, SP_LOG_INFO, "m", NULL, 0, &h), SP_ERR_INVALID);
	assert_int_equal(h.len, 0);
	sp_buf_free(&h);
}

static void test_level_and_format_names(void **state)
{
	(void)state;
	enum sp_log_level level;
	enum sp_log_format format;
	struct sp_diag d;
	assert_int_equal(sp_log_level_parse("warn", &level, &d), 0);
	assert_int_equal(level, SP_LOG_WARN);
	assert_int_equal(sp_log_level_parse("DEBUG", &level, &d), 0);
	assert_int_equal(level, SP_LOG_DEBUG);
	assert_int_equal(sp_log_level_parse("error", &level, NULL), 0);
	assert_int_equal(level, SP_LOG_ERROR);
	level = SP_LOG_ERROR;
	assert_int_equal(sp_log_level_parse("warning", &level, &d), SP_ERR_INVALID);
	assert_int_equal(level, SP_LOG_DEBUG);
	assert_string_equal(d.message,
			    "unknown log level \"warning\" (expected debug, info, warn or error)");
	assert_int_equal(sp_log_level_parse("", &level, &d), SP_ERR_INVALID);
	assert_int_equal(sp_log_level_parse(NULL, &level, &d), SP_ERR_INVALID);
	assert_int_equal(sp_log_level_parse("info ", &level, NULL), SP_ERR_INVALID);

	assert_int_equal(sp_log_format_parse("json", &format, &d), 0);
	assert_int_equal(format, SP_LOG_JSON);
	assert_int_equal(sp_log_format_parse("Text", &format, &d), 0);
	assert_int_equal(format, SP_LOG_TEXT);
	assert_int_equal(sp_log_format_parse("yaml", &format, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "unknown log format \"yaml\" (expected text or json)");

	assert_string_equal(sp_log_level_name(SP_LOG_INFO), "info");
	assert_string_equal(sp_log_level_name((enum sp_log_level)9), "unknown");
	assert_string_equal(sp_log_format_name(SP_LOG_JSON), "json");
	assert_string_equal(sp_log_format_name((enum sp_log_format)9), "unknown");
	assert_string_equal(sp_log_level_names[3], "error");
	assert_null(sp_log_level_names[4]);
	assert_null(sp_log_format_names[2]);
}

/* Reads everything from fd until EOF into a heap string. */
static char *read_all(int fd)
{
	size_t cap = 1 << 16, len = 0;
	char *out = malloc(cap + 1);
	assert_non_null(out);
	for (;;) {
		if (len == cap) {
			cap *= 2;
			out = realloc(out, cap + 1);
			assert_non_null(out);
		}
		ssize_t n = read(fd, out + len, cap - len);
		assert_true(n >= 0);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	out[len] = '\0';
	return out;
}

static void test_write_filters_levels(void **state)
{
	(void)state;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	struct sp_log_config c = text_config();
	c.fd = fds[1];
	c.level = SP_LOG_WARN;
	assert_int_equal(sp_log_write(&c, SP_LOG_DEBUG, "debug", NULL, 0), 0);
	assert_int_equal(sp_log_write(&c, SP_LOG_INFO, "info", NULL, 0), 0);
	assert_int_equal(sp_log_write(&c, SP_LOG_WARN, "warn", NULL, 0), 0);
	assert_int_equal(sp_log_write(&c, SP_LOG_ERROR, "error", NULL, 0), 0);
	assert_int_equal(sp_log_write(&c, (enum sp_log_level)7, "x", NULL, 0), SP_ERR_INVALID);

	/* The default logger, through the macros. */
	struct sp_log_config d = json_config();
	d.fd = fds[1];
	d.level = SP_LOG_INFO;
	d.program = "sallyport-controller";
	sp_log_set_default(&d);
	assert_false(sp_log_enabled(SP_LOG_DEBUG));
	assert_true(sp_log_enabled(SP_LOG_INFO));
	assert_false(sp_log_enabled((enum sp_log_level)5));
	assert_string_equal(sp_log_default()->program, "sallyport-controller");
	SP_LOG(SP_LOG_DEBUG, "hidden", SP_LOG_INT("n", 1));
	SP_LOG(SP_LOG_INFO, "shown", SP_LOG_INT("n", 2), SP_LOG_SECRET("pw", "swordfish"));
	SP_LOG_MSG(SP_LOG_ERROR, "bare");
	close(fds[1]);
	struct sp_log_config reset = {SP_LOG_INFO, SP_LOG_TEXT, STDERR_FILENO, NULL, NULL};
	sp_log_set_default(&reset);
	assert_null(sp_log_default()->program);

	char *all = read_all(fds[0]);
	close(fds[0]);
	assert_string_equal(all, "2026-11-25T08:20:12.345Z WARN warn\n"
				 "2026-11-25T08:20:12.345Z ERROR error\n"
				 "{\"ts\":\"2026-11-25T08:20:12.345Z\",\"level\":\"info\","
				 "\"program\":\"sallyport-controller\",\"msg\":\"shown\",\"n\":2,"
				 "\"pw\":\"[redacted]\"}\n"
				 "{\"ts\":\"2026-11-25T08:20:12.345Z\",\"level\":\"error\","
				 "\"program\":\"sallyport-controller\",\"msg\":\"bare\"}\n");
	free(all);
}

static void test_write_errors(void **state)
{
	(void)state;
	struct sp_log_config c = text_config();
	c.fd = -1;
	assert_int_equal(sp_log_write(&c, SP_LOG_ERROR, "nowhere", NULL, 0), SP_ERR_IO);
	/* The real clock is used when none is given: a plausible year. */
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	c.fd = fds[1];
	c.clock_ms = NULL;
	assert_int_equal(sp_log_write(&c, SP_LOG_INFO, "now", NULL, 0), 0);
	close(fds[1]);
	char *s = read_all(fds[0]);
	close(fds[0]);
	assert_true(strncmp(s, "20", 2) == 0);
	assert_int_equal(s[23], 'Z');
	free(s);
}

/* Two processes write full-size lines to one pipe; every line must arrive whole. */
static void test_concurrent_writers_do_not_interleave(void **state)
{
	(void)state;
	enum { WRITERS = 2, LINES = 200 };
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pids[WRITERS];
	for (int w = 0; w < WRITERS; w++) {
		pids[w] = fork();
		assert_true(pids[w] != -1);
		if (pids[w] == 0) {
			close(fds[0]);
			char value[SP_LOG_LINE_MAX];
			memset(value, 'a' + w, sizeof(value) - 1);
			value[sizeof(value) - 1] = '\0';
			struct sp_log_config c = text_config();
			c.fd = fds[1];
			const struct sp_log_field f = SP_LOG_STR("v", value);
			for (int i = 0; i < LINES; i++)
				if (sp_log_write(&c, SP_LOG_INFO, "m", &f, 1) != 0)
					_exit(1);
			_exit(0);
		}
	}
	close(fds[1]);
	char *all = read_all(fds[0]);
	close(fds[0]);
	for (int w = 0; w < WRITERS; w++) {
		int status;
		assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	int lines = 0;
	size_t first_len = 0;
	for (char *p = all; *p != '\0';) {
		char *end = strchr(p, '\n');
		assert_non_null(end);
		size_t n = (size_t)(end - p) + 1;
		if (first_len == 0)
			first_len = n;
		assert_int_equal(n, first_len);
		assert_true(n <= SP_LOG_LINE_MAX && n > SP_LOG_LINE_MAX - 64);
		assert_memory_equal(end - 12, " [truncated]", 12);
		/* One writer's letter throughout the value. */
		const char *v = strstr(p, " v=");
		assert_non_null(v);
		char letter = v[3];
		for (const char *q = v + 3; q < end - 12; q++)
			assert_int_equal(*q, letter);
		lines++;
		p = end + 1;
	}
	assert_int_equal(lines, WRITERS * LINES);
	free(all);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_text_line_exact),
	    cmocka_unit_test(test_text_escaping),
	    cmocka_unit_test(test_json_line_exact),
	    cmocka_unit_test(test_json_escaping_round_trip),
	    cmocka_unit_test(test_secret_never_written),
	    cmocka_unit_test(test_credentials_auto_redacted),
	    cmocka_unit_test(test_keys_sanitised),
	    cmocka_unit_test(test_program_name),
	    cmocka_unit_test(test_timestamps),
	    cmocka_unit_test(test_truncation),
	    cmocka_unit_test(test_small_buffer_and_bad_arguments),
	    cmocka_unit_test(test_level_and_format_names),
	    cmocka_unit_test(test_write_filters_levels),
	    cmocka_unit_test(test_write_errors),
	    cmocka_unit_test(test_concurrent_writers_do_not_interleave),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
