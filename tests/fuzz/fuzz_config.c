/*
 * tests/fuzz/fuzz_config.c — the three config layer parsers on arbitrary bytes.
 *
 * With one schema covering every value type and flag, the input is used three ways:
 *   1. split at '\n' and fed to the incremental file parser;
 *   2. split at NUL into environment entries;
 *   3. split at NUL into argv (after a program name).
 * After each layer: a failure must leave the config byte-for-byte as it was (every
 * layer of every key, compared through the all-layers dump); a success must leave
 * values the getters agree with. Finally the dump of the result must read back as a
 * config file giving the same values. Any violation aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/buf.h"
#include "shared/config.h"
#include "shared/error.h"

static const char *const modes[] = {"fast", "safe", "Strict", NULL};

static const struct sp_config_key schema[] = {
    {"http_listen", SP_CONFIG_ADDRESS, "0.0.0.0:8443", "API address.", 0, 0, 0, NULL},
    {"url", SP_CONFIG_URL, NULL, "Controller URL.", 0, 0, 0, NULL},
    {"workers", SP_CONFIG_INT, "4", NULL, 0, 1, 64, NULL},
    {"offset", SP_CONFIG_INT, NULL, NULL, 0, 0, 0, NULL},
    {"tls", SP_CONFIG_BOOL, "true", NULL, 0, 0, 0, NULL},
    {"mode", SP_CONFIG_ENUM, "safe", NULL, 0, 0, 0, modes},
    {"idle", SP_CONFIG_DURATION, "5m", NULL, 0, 1000, 3600000, NULL},
    {"grace", SP_CONFIG_DURATION, NULL, NULL, 0, 0, 0, NULL},
    {"state_dir", SP_CONFIG_PATH, "/var/lib/sallyport", NULL, 0, 0, 0, NULL},
    {"token", SP_CONFIG_STRING, NULL, NULL, SP_CONFIG_SECRET, 0, 0, NULL},
    {"name", SP_CONFIG_STRING, NULL, NULL, 0, 0, 0, NULL},
    {"must", SP_CONFIG_STRING, NULL, NULL, SP_CONFIG_REQUIRED, 0, 0, NULL},
    {"config", SP_CONFIG_PATH, NULL, NULL, SP_CONFIG_NOT_IN_FILE, 0, 0, NULL},
    {"print_config", SP_CONFIG_BOOL, NULL, NULL, SP_CONFIG_FLAG_ONLY, 0, 0, NULL},
};
#define SCHEMA_COUNT (sizeof(schema) / sizeof(schema[0]))

/* Most entries the env and argv views take, so one input stays cheap. */
#define MAX_ENTRIES 256

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_config: %s\n", what);
		abort();
	}
}

/* The all-layers dump as a heap string. */
static char *snapshot(const struct sp_config *cfg)
{
	struct sp_buf b;
	sp_buf_init(&b, 0);
	check(sp_config_dump(cfg, 1, &b) == 0, "dump failed");
	const char *s = sp_buf_cstr(&b);
	check(s != NULL, "dump has no room for its NUL");
	char *copy = strdup(s);
	sp_buf_free(&b);
	check(copy != NULL, "out of memory");
	return copy;
}

static void check_unchanged(const struct sp_config *cfg, const char *before, int r)
{
	if (r == 0)
		return;
	char *after = snapshot(cfg);
	check(strcmp(before, after) == 0, "a failed layer changed the config");
	free(after);
}

/* Every getter agrees with get_str on every key. */
static void check_getters(const struct sp_config *cfg)
{
	for (size_t k = 0; k < SCHEMA_COUNT; k++) {
		const char *name = schema[k].name;
		const char *text = sp_config_get_str(cfg, name);
		const char *source = sp_config_source(cfg, name);
		check(source != NULL, "known key without a source");
		check(text == NULL || text[0] != '\0', "empty string returned instead of NULL");
		check(text == NULL || strlen(text) <= SP_CONFIG_VALUE_MAX, "value over the cap");
		int64_t v = 0;
		int b = 0;
		int r = schema[k].type == SP_CONFIG_INT ? sp_config_get_int(cfg, name, &v)
			: schema[k].type == SP_CONFIG_DURATION
			    ? sp_config_get_duration_ms(cfg, name, &v)
			: schema[k].type == SP_CONFIG_BOOL ? sp_config_get_bool(cfg, name, &b)
							   : (text != NULL ? 0 : SP_ERR_NOT_FOUND);
		check((r == 0) == (text != NULL), "typed getter disagrees with get_str");
		if (r == 0 && schema[k].type == SP_CONFIG_INT)
			check((v >= schema[k].min && v <= schema[k].max) ||
				  (schema[k].min == 0 && schema[k].max == 0),
			      "int outside its bounds");
		if (r == 0 && schema[k].type == SP_CONFIG_DURATION)
			check(v >= 0, "negative duration");
		if (r == 0 && schema[k].type == SP_CONFIG_BOOL)
			check(strcmp(text, b ? "true" : "false") == 0, "bool text not normalised");
	}
}

/* Feeds text split at '\n' as a file layer; returns the commit's result. */
static int feed_lines(struct sp_config *cfg, const char *path, const char *data, size_t size,
		      int skip_file_forbidden)
{
	struct sp_diag d;
	check(sp_config_file_begin(cfg, path) == 0, "begin failed");
	size_t start = 0;
	unsigned lineno = 1;
	while (start < size) {
		const char *nl = memchr(data + start, '\n', size - start);
		size_t end = nl != NULL ? (size_t)(nl - data) + 1 : size;
		int skip = skip_file_forbidden && (strncmp(data + start, "config ", 7) == 0 ||
						   strncmp(data + start, "print_config ", 13) == 0);
		if (!skip) {
			int r = sp_config_feed_line(cfg, data + start, end - start, lineno, &d);
			if (r < 0) {
				check(d.message[0] != '\0', "error without a diag");
				break;
			}
		}
		start = end;
		lineno++;
	}
	return sp_config_file_commit(cfg, &d);
}

/* Splits a copy of the input at NUL into at most MAX_ENTRIES strings after `first`. */
static size_t split_nul(char *copy, size_t size, const char *first, char **out)
{
	size_t n = 0;
	if (first != NULL)
		out[n++] = (char *)first;
	size_t start = 0;
	while (start <= size && n < MAX_ENTRIES) {
		size_t end = start;
		while (end < size && copy[end] != '\0')
			end++;
		out[n++] = copy + start;
		start = end + 1;
	}
	out[n] = NULL;
	return n;
}

/* The dump of cfg, fed back as a file, gives the same value for every file-settable key. */
static void check_round_trip(const struct sp_config *cfg)
{
	struct sp_buf b;
	sp_buf_init(&b, 0);
	check(sp_config_dump(cfg, 0, &b) == 0, "dump failed");
	struct sp_config back;
	struct sp_diag d;
	check(sp_config_init(&back, schema, SCHEMA_COUNT, &d) == 0, "init failed");
	int r = feed_lines(&back, "dump", (const char *)b.data, b.len, 1);
	/* A value full of quotes can make its escaped line longer than a line may be. */
	if (r == SP_ERR_TOO_LARGE) {
		sp_config_free(&back);
		sp_buf_free(&b);
		return;
	}
	if (r != 0) {
		fprintf(stderr, "fuzz_config: dump does not read back: %s\n", d.message);
		abort();
	}
	for (size_t k = 0; k < SCHEMA_COUNT; k++) {
		if ((schema[k].flags & (SP_CONFIG_NOT_IN_FILE | SP_CONFIG_FLAG_ONLY)) != 0)
			continue;
		const char *a = sp_config_get_str(cfg, schema[k].name);
		const char *c = sp_config_get_str(&back, schema[k].name);
		if ((schema[k].flags & SP_CONFIG_SECRET) != 0)
			check((a == NULL) == (c == NULL), "secret set-ness lost in the dump");
		else
			check((a == NULL && c == NULL) ||
				  (a != NULL && c != NULL && strcmp(a, c) == 0),
			      "dump read back differently");
	}
	sp_config_free(&back);
	sp_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sp_config cfg;
	struct sp_diag d;
	check(sp_config_init(&cfg, schema, SCHEMA_COUNT, &d) == 0, "init failed");
	char *copy = malloc(size + 1);
	check(copy != NULL, "out of memory");
	if (size != 0)
		memcpy(copy, data, size);
	copy[size] = '\0';
	char *entries[MAX_ENTRIES + 2];

	/* 1. The input as a config file. */
	char *before = snapshot(&cfg);
	int r = feed_lines(&cfg, "fuzz.conf", (const char *)data, size, 0);
	check_unchanged(&cfg, before, r);
	free(before);
	check_getters(&cfg);

	/* 2. The input as environment entries (prefixed so that some name keys). */
	size_t n = split_nul(copy, size, "SALLYPORT_NAME=env", entries);
	before = snapshot(&cfg);
	r = sp_config_apply_env(&cfg, entries, &d);
	check_unchanged(&cfg, before, r);
	free(before);
	check_getters(&cfg);
	size_t cursor = 0;
	char name[32];
	while (sp_config_next_unknown_env(&cfg, entries, &cursor, name, sizeof(name)) == 1)
		check(strncmp(name, "SALLYPORT_", 10) == 0 || strlen(name) < 10,
		      "bad unknown name");

	/* 3. The same split as argv. */
	n = split_nul(copy, size, "sallyport", entries);
	before = snapshot(&cfg);
	int rest = -1;
	r = sp_config_apply_args(&cfg, (int)n, entries, &rest, &d);
	check_unchanged(&cfg, before, r);
	check(r == 0 ? rest >= 1 && rest <= (int)n : rest == 0, "bad rest index");
	free(before);
	check_getters(&cfg);

	/* The result reads back from its own dump; the other readers do not crash. */
	check_round_trip(&cfg);
	(void)sp_config_check_required(&cfg, &d);
	int64_t ms;
	char host[SP_CONFIG_HOST_MAX];
	uint16_t port;
	(void)sp_config_parse_duration(copy, &ms, NULL);
	if (sp_config_parse_address(copy, host, sizeof(host), &port, NULL) == 0)
		check(port != 0 && host[0] != '\0', "address without host or port");

	free(copy);
	sp_config_free(&cfg);
	return 0;
}
