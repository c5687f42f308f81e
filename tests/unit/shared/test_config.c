/* Unit tests for shared/config.c. */
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

#include "shared/buf.h"
#include "shared/config.h"
#include "shared/error.h"

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};

enum {
	K_HTTP_LISTEN,
	K_URL,
	K_WORKERS,
	K_OFFSET,
	K_TLS,
	K_LOG_LEVEL,
	K_IDLE_TIMEOUT,
	K_GRACE,
	K_STATE_DIR,
	K_ENROLL_TOKEN,
	K_NAME,
	K_CONFIG,
	K_PRINT_CONFIG,
	K_COUNT,
};

static const struct sp_config_key schema[] = {
    [K_HTTP_LISTEN] = {"http_listen", SP_CONFIG_ADDRESS, "0.0.0.0:8443",
		       "Address the HTTPS API listens on.", 0, 0, 0, NULL},
    [K_URL] = {"url", SP_CONFIG_URL, NULL, "The controller's URL.", 0, 0, 0, NULL},
    [K_WORKERS] = {"workers", SP_CONFIG_INT, "4", "Worker threads.", 0, 1, 64, NULL},
    [K_OFFSET] = {"offset", SP_CONFIG_INT, "0", NULL, 0, 0, 0, NULL},
    [K_TLS] = {"tls", SP_CONFIG_BOOL, "true", "Serve TLS.", 0, 0, 0, NULL},
    [K_LOG_LEVEL] = {"log_level", SP_CONFIG_ENUM, "info", "Least severe level logged.", 0, 0, 0,
		     levels},
    [K_IDLE_TIMEOUT] = {"idle_timeout", SP_CONFIG_DURATION, "5m", "Idle flows close after.", 0,
			1000, 3600000, NULL},
    [K_GRACE] = {"grace", SP_CONFIG_DURATION, "30s", NULL, 0, 0, 0, NULL},
    [K_STATE_DIR] = {"state_dir", SP_CONFIG_PATH, "/var/lib/sallyport", "State folder.", 0, 0, 0,
		     NULL},
    [K_ENROLL_TOKEN] = {"enroll_token", SP_CONFIG_STRING, NULL, "One-time enrollment token.",
			SP_CONFIG_SECRET, 0, 0, NULL},
    [K_NAME] = {"name", SP_CONFIG_STRING, NULL, NULL, 0, 0, 0, NULL},
    [K_CONFIG] = {"config", SP_CONFIG_PATH, "/etc/sallyport/controller.conf", "Config file.",
		  SP_CONFIG_NOT_IN_FILE, 0, 0, NULL},
    [K_PRINT_CONFIG] = {"print_config", SP_CONFIG_BOOL, "false", "Print and exit.",
			SP_CONFIG_FLAG_ONLY, 0, 0, NULL},
};

static const char conf_path[] = "/etc/sallyport/controller.conf";

static int setup(void **state)
{
	struct sp_config *cfg = calloc(1, sizeof(*cfg));
	struct sp_diag d = {{0}};
	if (cfg == NULL || sp_config_init(cfg, schema, K_COUNT, &d) != 0) {
		fprintf(stderr, "setup: %s\n", d.message);
		free(cfg);
		return -1;
	}
	*state = cfg;
	return 0;
}

static int teardown(void **state)
{
	sp_config_free(*state);
	free(*state);
	return 0;
}

/* Every layer of every key, as text (the "unchanged" check). Caller frees. */
static char *dump_all(const struct sp_config *cfg)
{
	struct sp_buf b;
	sp_buf_init(&b, 0);
	assert_int_equal(sp_config_dump(cfg, 1, &b), 0);
	char *s = strdup(sp_buf_cstr(&b));
	sp_buf_free(&b);
	assert_non_null(s);
	return s;
}

/* Applies text as a config file layer named conf_path, split into lines. */
static int apply_file(struct sp_config *cfg, const char *text, struct sp_diag *diag)
{
	assert_int_equal(sp_config_file_begin(cfg, conf_path), 0);
	unsigned lineno = 1;
	const char *p = text;
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = nl != NULL ? (size_t)(nl - p) + 1 : strlen(p);
		int r = sp_config_feed_line(cfg, p, n, lineno++, diag);
		if (r < 0) {
			/* The layer is poisoned: further lines and the commit repeat the error. */
			struct sp_diag again;
			assert_int_equal(sp_config_feed_line(cfg, "tls = true", 10, lineno, &again),
					 r);
			assert_string_equal(again.message, diag->message);
			break;
		}
		p += n;
	}
	return sp_config_file_commit(cfg, diag);
}

/* Expects the file text to fail with exactly `want` and to change nothing. */
static void expect_file_error(struct sp_config *cfg, const char *text, int code, const char *want)
{
	char *before = dump_all(cfg);
	struct sp_diag d = {{0}};
	assert_int_equal(apply_file(cfg, text, &d), code);
	assert_string_equal(d.message, want);
	char *after = dump_all(cfg);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

static void expect_env_error(struct sp_config *cfg, char *const envp[], const char *want)
{
	char *before = dump_all(cfg);
	struct sp_diag d = {{0}};
	assert_int_equal(sp_config_apply_env(cfg, envp, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, want);
	char *after = dump_all(cfg);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

static void expect_args_error(struct sp_config *cfg, int argc, char *const argv[], int code,
			      const char *want)
{
	char *before = dump_all(cfg);
	struct sp_diag d = {{0}};
	int rest = 99;
	assert_int_equal(sp_config_apply_args(cfg, argc, argv, &rest, &d), code);
	assert_int_equal(rest, 0);
	assert_string_equal(d.message, want);
	char *after = dump_all(cfg);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

/* ---- defaults and getters ------------------------------------------------------------- */

static void test_defaults_and_getters(void **state)
{
	struct sp_config *cfg = *state;
	int64_t v;
	int b;
	assert_string_equal(sp_config_get_str(cfg, "http_listen"), "0.0.0.0:8443");
	assert_string_equal(sp_config_get_str(cfg, "http-listen"), "0.0.0.0:8443");
	assert_string_equal(sp_config_source(cfg, "http_listen"), "default");
	assert_int_equal(sp_config_layer_of(cfg, "http_listen"), SP_CONFIG_LAYER_DEFAULT);
	assert_int_equal(sp_config_get_int(cfg, "workers", &v), 0);
	assert_int_equal(v, 4);
	assert_int_equal(sp_config_get_bool(cfg, "tls", &b), 0);
	assert_int_equal(b, 1);
	assert_int_equal(sp_config_get_duration_ms(cfg, "idle_timeout", &v), 0);
	assert_int_equal(v, 300000);
	assert_int_equal(sp_config_get_duration_ms(cfg, "grace", &v), 0);
	assert_int_equal(v, 30000);
	assert_string_equal(sp_config_get_str(cfg, "log_level"), "info");

	/* Not set by any layer. */
	assert_null(sp_config_get_str(cfg, "url"));
	assert_string_equal(sp_config_source(cfg, "url"), "not set");
	assert_int_equal(sp_config_layer_of(cfg, "url"), SP_ERR_NOT_FOUND);
	/* Unknown keys and wrong types. */
	assert_null(sp_config_get_str(cfg, "nope"));
	assert_null(sp_config_get_str(cfg, NULL));
	assert_null(sp_config_source(cfg, "nope"));
	assert_int_equal(sp_config_layer_of(cfg, "nope"), SP_ERR_NOT_FOUND);
	v = 5;
	assert_int_equal(sp_config_get_int(cfg, "nope", &v), SP_ERR_NOT_FOUND);
	assert_int_equal(v, 0);
	v = 5;
	assert_int_equal(sp_config_get_int(cfg, "tls", &v), SP_ERR_INVALID);
	assert_int_equal(v, 0);
	assert_int_equal(sp_config_get_bool(cfg, "workers", &b), SP_ERR_INVALID);
	assert_int_equal(b, 0);
	assert_int_equal(sp_config_get_duration_ms(cfg, "workers", &v), SP_ERR_INVALID);
	assert_int_equal(sp_config_check_required(cfg, NULL), 0);
}

/* ---- precedence ------------------------------------------------------------------------ */

static const char precedence_file[] = "http_listen = 10.0.0.1:443\n"
				      "workers = 8\n"
				      "log_level = warn\n"
				      "grace = 1m\n";
static char *precedence_env[] = {"PATH=/usr/bin", "SALLYPORT_WORKERS=16",
				 "SALLYPORT_LOG_LEVEL=error", "SALLYPORT_NAME=from-env", NULL};
static char *precedence_argv[] = {"sallyport-controller",
				  "--log-level",
				  "debug",
				  "--name=from-flag",
				  "serve",
				  "--workers",
				  "2",
				  NULL};

static void check_precedence(const struct sp_config *cfg)
{
	int64_t v;
	assert_string_equal(sp_config_get_str(cfg, "http_listen"), "10.0.0.1:443");
	assert_string_equal(sp_config_source(cfg, "http_listen"), "file "
								  "/etc/sallyport/"
								  "controller.conf line 1");
	assert_int_equal(sp_config_get_int(cfg, "workers", &v), 0);
	assert_int_equal(v, 16);
	assert_string_equal(sp_config_source(cfg, "workers"), "env SALLYPORT_WORKERS");
	assert_int_equal(sp_config_layer_of(cfg, "workers"), SP_CONFIG_LAYER_ENV);
	assert_string_equal(sp_config_get_str(cfg, "log_level"), "debug");
	assert_string_equal(sp_config_source(cfg, "log_level"), "flag --log-level");
	assert_int_equal(sp_config_layer_of(cfg, "log_level"), SP_CONFIG_LAYER_FLAG);
	assert_string_equal(sp_config_get_str(cfg, "name"), "from-flag");
	assert_string_equal(sp_config_source(cfg, "name"), "flag --name");
	assert_int_equal(sp_config_get_duration_ms(cfg, "grace", &v), 0);
	assert_int_equal(v, 60000);
	assert_string_equal(sp_config_source(cfg, "grace"), "file "
							    "/etc/sallyport/"
							    "controller.conf line 4");
	assert_string_equal(sp_config_source(cfg, "state_dir"), "default");
}

static void test_precedence_all_layers(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d;
	int rest = -1;
	assert_int_equal(apply_file(cfg, precedence_file, &d), 0);
	assert_int_equal(sp_config_apply_env(cfg, precedence_env, &d), 0);
	assert_int_equal(sp_config_apply_args(cfg, 7, precedence_argv, &rest, &d), 0);
	/* Parsing stopped at the subcommand; its own flags are left to it. */
	assert_int_equal(rest, 4);
	check_precedence(cfg);

	/* The same layers applied in the opposite order give the same answer. */
	struct sp_config other;
	assert_int_equal(sp_config_init(&other, schema, K_COUNT, &d), 0);
	assert_int_equal(sp_config_apply_args(&other, 7, precedence_argv, &rest, &d), 0);
	assert_int_equal(sp_config_apply_env(&other, precedence_env, &d), 0);
	assert_int_equal(apply_file(&other, precedence_file, &d), 0);
	check_precedence(&other);
	char *a = dump_all(cfg), *b = dump_all(&other);
	assert_string_equal(a, b);
	free(a);
	free(b);
	sp_config_free(&other);

	/* Re-applying a layer replaces it whole: the new file no longer sets grace. */
	assert_int_equal(apply_file(cfg, "http_listen = 10.0.0.2:443\n", &d), 0);
	assert_string_equal(sp_config_source(cfg, "grace"), "default");
	assert_string_equal(sp_config_get_str(cfg, "http_listen"), "10.0.0.2:443");
	/* An empty env layer removes the env values. */
	char *none[] = {NULL};
	assert_int_equal(sp_config_apply_env(cfg, none, &d), 0);
	assert_int_equal(sp_config_apply_env(cfg, NULL, &d), 0);
	assert_string_equal(sp_config_source(cfg, "workers"), "default");
}

static void test_empty_value_means_not_set(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d;
	int64_t v;
	assert_int_equal(apply_file(cfg, "state_dir =\nworkers = \"\"\n", &d), 0);
	assert_null(sp_config_get_str(cfg, "state_dir"));
	assert_string_equal(sp_config_source(cfg, "state_dir"),
			    "file /etc/sallyport/controller.conf line 1");
	assert_int_equal(sp_config_get_int(cfg, "workers", &v), SP_ERR_NOT_FOUND);
	char *env[] = {"SALLYPORT_STATE_DIR=/srv/state", NULL};
	assert_int_equal(sp_config_apply_env(cfg, env, &d), 0);
	assert_string_equal(sp_config_get_str(cfg, "state_dir"), "/srv/state");
	char *argv[] = {"p", "--state-dir=", NULL};
	int rest;
	assert_int_equal(sp_config_apply_args(cfg, 2, argv, &rest, &d), 0);
	assert_null(sp_config_get_str(cfg, "state_dir"));
	assert_int_equal(sp_config_layer_of(cfg, "state_dir"), SP_CONFIG_LAYER_FLAG);
}

/* ---- the file syntax ----------------------------------------------------------------- */

static void test_file_syntax(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d = {{0}};
	const char text[] = "# Sallyport controller\r\n"
			    "\r\n"
			    "   \t\n"
			    "  http-listen\t=\t127.0.0.1:9000   \r\n"
			    "name = \"  say \\\"hi\\\" # not a comment \\\\ \"  # a comment\n"
			    "url = https://c.example.com/a#frag # the comment\n"
			    "log_level = WARN\n"
			    "tls = off\n"
			    "enroll_token = \"\"\n"
			    "idle_timeout=1h\n"
			    "state_dir = /srv/sally port";
	int r = apply_file(cfg, text, &d);
	if (r != 0)
		fail_msg("%s", d.message);
	int64_t v;
	int b;
	assert_string_equal(sp_config_get_str(cfg, "http_listen"), "127.0.0.1:9000");
	assert_string_equal(sp_config_source(cfg, "http_listen"),
			    "file /etc/sallyport/controller.conf line 4");
	assert_string_equal(sp_config_get_str(cfg, "name"), "  say \"hi\" # not a comment \\ ");
	assert_string_equal(sp_config_get_str(cfg, "url"), "https://c.example.com/a#frag");
	assert_string_equal(sp_config_get_str(cfg, "log_level"), "warn");
	assert_int_equal(sp_config_get_bool(cfg, "tls", &b), 0);
	assert_int_equal(b, 0);
	assert_string_equal(sp_config_get_str(cfg, "tls"), "false");
	assert_null(sp_config_get_str(cfg, "enroll_token"));
	assert_int_equal(sp_config_get_duration_ms(cfg, "idle_timeout", &v), 0);
	assert_int_equal(v, 3600000);
	assert_string_equal(sp_config_get_str(cfg, "state_dir"), "/srv/sally port");
	assert_string_equal(sp_config_source(cfg, "state_dir"),
			    "file /etc/sallyport/controller.conf line 11");

	/* A value that is only a comment is empty; '#' right after '=' is a value. */
	assert_int_equal(apply_file(cfg, "name = # nothing\n", &d), 0);
	assert_null(sp_config_get_str(cfg, "name"));
	assert_int_equal(apply_file(cfg, "name =#hash\n", &d), 0);
	assert_string_equal(sp_config_get_str(cfg, "name"), "#hash");
	/* An empty file is a valid, empty layer. */
	assert_int_equal(apply_file(cfg, "", &d), 0);
	assert_string_equal(sp_config_source(cfg, "http_listen"), "default");
}

static void test_file_errors_name_key_and_line(void **state)
{
	struct sp_config *cfg = *state;
	/* Something to keep: a committed file layer and env layer. */
	struct sp_diag d;
	assert_int_equal(apply_file(cfg, "workers = 9\nname = kept\n", &d), 0);
	char *env[] = {"SALLYPORT_GRACE=2m", NULL};
	assert_int_equal(sp_config_apply_env(cfg, env, &d), 0);

	expect_file_error(cfg,
			  "# line 1\n\n\n\n\nworkers = 3\n"
			  "http_listen = 127.0.0.1:99999\n",
			  SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 7: key \"http_listen\": "
			  "\"127.0.0.1:99999\" is not a valid address (port must be 1-65535)");
	expect_file_error(cfg, "workers = 3\nhttp_listn = 1.2.3.4:5\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 2: unknown key "
			  "\"http_listn\"");
	expect_file_error(cfg, "workers = 3\nname = a\nworkers = 4\n", SP_ERR_EXISTS,
			  "config file /etc/sallyport/controller.conf line 3: key \"workers\" is "
			  "already set on line 1");
	expect_file_error(cfg, "workers = 3\nhttp-listen = 1.2.3.4:5\nhttp_listen = 1.2.3.4:6\n",
			  SP_ERR_EXISTS,
			  "config file /etc/sallyport/controller.conf line 3: key \"http_listen\" "
			  "is already set on line 2");
	expect_file_error(cfg, "workers = many\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"workers\": "
			  "\"many\" is not an integer");
	expect_file_error(cfg, "workers = 65\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"workers\": "
			  "\"65\" is out of range (must be between 1 and 64)");
	expect_file_error(cfg, "workers = 0\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"workers\": "
			  "\"0\" is out of range (must be between 1 and 64)");
	expect_file_error(cfg, "log_level = verbose\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"log_level\": "
			  "\"verbose\" is not one of: debug, info, warn, error");
	expect_file_error(cfg, "tls = maybe\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"tls\": "
			  "\"maybe\" is not a boolean (use true or false)");
	expect_file_error(cfg, "workers = 3\njust some words\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 2: expected \"key = "
			  "value\" but found \"just some words\" (no \"=\")");
	expect_file_error(cfg, " = value\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: no key before \"=\"");
	expect_file_error(cfg, "name = \"open\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"name\": "
			  "unterminated quoted value");
	expect_file_error(cfg, "name = \"ends in backslash\\\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"name\": "
			  "unterminated quoted value");
	expect_file_error(cfg, "name = \"a\\nb\"\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"name\": "
			  "unknown escape \"\\n\" in a quoted value (only \\\" and \\\\ are "
			  "allowed)");
	expect_file_error(cfg, "name = \"a\" b\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"name\": "
			  "unexpected text after the closing quote");
	expect_file_error(cfg, "config = /etc/other.conf\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"config\" "
			  "cannot be set in a config file");
	expect_file_error(cfg, "print-config = true\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key "
			  "\"print_config\" cannot be set in a config file");
	expect_file_error(cfg,
			  "name = a\x01"
			  "b\n",
			  SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"name\": "
			  "\"a?b\" contains a control character");
	expect_file_error(cfg, "name = a\rb\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key \"name\": "
			  "\"a?b\" contains a control character");
	/* A secret's value is never repeated in a diag. */
	expect_file_error(cfg, "enroll_token = \"tok\x7fsecret\"\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key "
			  "\"enroll_token\": the value contains a control character");
	/* Keys are exact: no upper case, no spaces inside. */
	expect_file_error(cfg, "WORKERS = 3\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: unknown key "
			  "\"WORKERS\"");
	expect_file_error(cfg, "work ers = 3\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: unknown key "
			  "\"work ers\"");

	/* What was committed before is all still there. */
	int64_t v;
	assert_int_equal(sp_config_get_int(cfg, "workers", &v), 0);
	assert_int_equal(v, 9);
	assert_string_equal(sp_config_get_str(cfg, "name"), "kept");
	assert_string_equal(sp_config_source(cfg, "grace"), "env SALLYPORT_GRACE");
}

static void test_file_nul_and_overlong_lines(void **state)
{
	struct sp_config *cfg = *state;
	char *before = dump_all(cfg);
	struct sp_diag d;
	assert_int_equal(sp_config_file_begin(cfg, conf_path), 0);
	assert_int_equal(sp_config_feed_line(cfg, "workers = 5\n", 12, 1, &d), 0);
	assert_int_equal(sp_config_feed_line(cfg, "name = a\0b\n", 11, 2, &d), SP_ERR_INVALID);
	assert_string_equal(d.message,
			    "config file /etc/sallyport/controller.conf line 2: line contains a "
			    "NUL byte");
	assert_int_equal(sp_config_file_commit(cfg, &d), SP_ERR_INVALID);
	assert_string_equal(d.message,
			    "config file /etc/sallyport/controller.conf line 2: line contains a "
			    "NUL byte");

	/* Exactly SP_CONFIG_LINE_MAX bytes is accepted, one more is not. */
	char *line = malloc(SP_CONFIG_LINE_MAX + 2);
	assert_non_null(line);
	memcpy(line, "name = ", 7);
	memset(line + 7, 'n', SP_CONFIG_LINE_MAX - 8);
	line[SP_CONFIG_LINE_MAX - 1] = '\n';
	assert_int_equal(sp_config_file_begin(cfg, conf_path), 0);
	assert_int_equal(sp_config_feed_line(cfg, line, SP_CONFIG_LINE_MAX, 1, &d), 0);
	sp_config_file_abort(cfg);
	line[SP_CONFIG_LINE_MAX - 1] = 'n';
	line[SP_CONFIG_LINE_MAX] = '\n';
	assert_int_equal(sp_config_file_begin(cfg, conf_path), 0);
	assert_int_equal(sp_config_feed_line(cfg, line, SP_CONFIG_LINE_MAX + 1, 3, &d),
			 SP_ERR_TOO_LARGE);
	assert_string_equal(d.message, "config file /etc/sallyport/controller.conf line 3: line "
				       "is longer than 4096 bytes");
	assert_int_equal(sp_config_file_commit(cfg, NULL), SP_ERR_TOO_LARGE);
	free(line);

	/* Misuse: feeding with no layer begun; committing twice. */
	assert_int_equal(sp_config_feed_line(cfg, "a = b", 5, 1, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "config: a line was fed before sp_config_file_begin");
	assert_int_equal(sp_config_file_commit(cfg, &d), SP_ERR_INVALID);
	/* Begin drops an unfinished layer. */
	assert_int_equal(sp_config_file_begin(cfg, conf_path), 0);
	assert_int_equal(sp_config_feed_line(cfg, "workers = 7", 11, 1, &d), 0);
	assert_int_equal(sp_config_file_begin(cfg, NULL), 0);
	assert_int_equal(sp_config_file_commit(cfg, &d), 0);
	assert_string_equal(sp_config_source(cfg, "workers"), "default");

	char *after = dump_all(cfg);
	assert_string_equal(before, after);
	free(before);
	free(after);
}

/* ---- load_file ------------------------------------------------------------------------- */

static char *write_temp(const char *text, size_t len, mode_t mode)
{
	char *path = strdup("/tmp/sp_config_test_XXXXXX");
	assert_non_null(path);
	int fd = mkstemp(path);
	assert_true(fd != -1);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
	return path;
}

static void test_load_file(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d;
	const char text[] =
	    "workers = 12\nenroll_token = s3cret-token\nname = last line, no newline";
	char *path = write_temp(text, strlen(text), 0600);
	assert_int_equal(sp_config_load_file(cfg, path, &d), 0);
	char want[300];
	snprintf(want, sizeof(want), "file %s line 3", path);
	assert_string_equal(sp_config_source(cfg, "name"), want);
	assert_string_equal(sp_config_get_str(cfg, "name"), "last line, no newline");
	assert_string_equal(sp_config_get_str(cfg, "enroll_token"), "s3cret-token");

	/* The same file readable by others may not hold a secret. */
	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(sp_config_load_file(cfg, path, &d), SP_ERR_PERMISSION);
	snprintf(want, sizeof(want),
		 "config file %s line 2: key \"enroll_token\" is a secret, but others can read "
		 "the file (fix with chmod o-r)",
		 path);
	assert_string_equal(d.message, want);
	assert_string_equal(sp_config_get_str(cfg, "enroll_token"), "s3cret-token");
	unlink(path);
	free(path);

	/* Without secrets, 0644 is fine. */
	path = write_temp("workers = 13\n", 13, 0644);
	assert_int_equal(sp_config_load_file(cfg, path, &d), 0);
	assert_null(sp_config_get_str(cfg, "enroll_token"));
	unlink(path);
	free(path);

	/* A bad line: nothing changes. */
	char *before = dump_all(cfg);
	path = write_temp("workers = 20\nworkers = 21\n", 26, 0600);
	assert_int_equal(sp_config_load_file(cfg, path, &d), SP_ERR_EXISTS);
	snprintf(want, sizeof(want),
		 "config file %s line 2: key \"workers\" is already set on line 1", path);
	assert_string_equal(d.message, want);
	char *after = dump_all(cfg);
	assert_string_equal(before, after);
	free(after);
	unlink(path);
	free(path);

	/* Too large. */
	char *big = malloc(SP_CONFIG_FILE_MAX + 1);
	assert_non_null(big);
	memset(big, '\n', SP_CONFIG_FILE_MAX + 1);
	path = write_temp(big, SP_CONFIG_FILE_MAX + 1, 0600);
	assert_int_equal(sp_config_load_file(cfg, path, &d), SP_ERR_TOO_LARGE);
	snprintf(want, sizeof(want), "config file %s is larger than 1048576 bytes", path);
	assert_string_equal(d.message, want);
	unlink(path);
	free(path);
	/* Exactly the cap is read. */
	path = write_temp(big, SP_CONFIG_FILE_MAX, 0600);
	assert_int_equal(sp_config_load_file(cfg, path, &d), 0);
	unlink(path);
	free(path);
	free(big);

	assert_int_equal(sp_config_load_file(cfg, "/nonexistent/sallyport.conf", &d),
			 SP_ERR_NOT_FOUND);
	assert_string_equal(d.message, "config file /nonexistent/sallyport.conf does not exist");
	assert_int_equal(sp_config_load_file(cfg, NULL, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "config file: no path given");
	assert_int_equal(sp_config_load_file(cfg, "/tmp", &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "config file /tmp is not a regular file");

	/* The failed loads changed nothing since the last good one (the empty file). */
	after = dump_all(cfg);
	assert_string_equal(sp_config_source(cfg, "workers"), "default");
	free(after);
	free(before);
}

/* ---- environment ---------------------------------------------------------------------- */

static void test_env_layer(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d;
	char *env[] = {
	    "HOME=/root",
	    "SALLYPORT_SOURCE_DIR=/src", /* another program's or a test's: ignored */
	    "SALLYPORT_URL=https://controller.example.com:8443",
	    "SALLYPORT_URL=https://second.example.com", /* the first wins, as with getenv */
	    "SALLYPORT_ENROLL_TOKEN=tok-123",
	    "SALLYPORT_PRINT_CONFIG=true",     /* flag only: ignored */
	    "SALLYPORT_http_listen=1.1.1.1:1", /* names are upper case */
	    "SALLYPORT_LOG_LEVEL",	       /* no '=': ignored */
	    "SALLYPORT_IDLE_TIMEOUT=90s",
	    NULL,
	};
	assert_int_equal(sp_config_apply_env(cfg, env, &d), 0);
	assert_string_equal(sp_config_get_str(cfg, "url"), "https://controller.example.com:8443");
	assert_string_equal(sp_config_source(cfg, "url"), "env SALLYPORT_URL");
	assert_string_equal(sp_config_get_str(cfg, "enroll_token"), "tok-123");
	assert_string_equal(sp_config_source(cfg, "print_config"), "default");
	assert_string_equal(sp_config_source(cfg, "http_listen"), "default");
	assert_string_equal(sp_config_source(cfg, "log_level"), "default");
	int64_t v;
	assert_int_equal(sp_config_get_duration_ms(cfg, "idle_timeout", &v), 0);
	assert_int_equal(v, 90000);

	size_t cursor = 0;
	char name[64];
	assert_int_equal(sp_config_next_unknown_env(cfg, env, &cursor, name, sizeof(name)), 1);
	assert_string_equal(name, "SALLYPORT_SOURCE_DIR");
	assert_int_equal(sp_config_next_unknown_env(cfg, env, &cursor, name, sizeof(name)), 1);
	assert_string_equal(name, "SALLYPORT_PRINT_CONFIG");
	assert_int_equal(sp_config_next_unknown_env(cfg, env, &cursor, name, 12), 1);
	assert_string_equal(name, "SALLYPORT_h");
	assert_int_equal(sp_config_next_unknown_env(cfg, env, &cursor, name, sizeof(name)), 1);
	assert_string_equal(name, "SALLYPORT_LOG_LEVEL");
	assert_int_equal(sp_config_next_unknown_env(cfg, env, &cursor, name, sizeof(name)), 0);
	assert_string_equal(name, "");

	char *bad_port[] = {"SALLYPORT_NAME=x", "SALLYPORT_HTTP_LISTEN=127.0.0.1:99999", NULL};
	expect_env_error(cfg, bad_port,
			 "environment variable SALLYPORT_HTTP_LISTEN: key \"http_listen\": "
			 "\"127.0.0.1:99999\" is not a valid address (port must be 1-65535)");
	char *bad_int[] = {"SALLYPORT_WORKERS= 5", NULL};
	expect_env_error(
	    cfg, bad_int,
	    "environment variable SALLYPORT_WORKERS: key \"workers\": \" 5\" is not an "
	    "integer");
	char *bad_url[] = {"SALLYPORT_URL=ftp://x", NULL};
	expect_env_error(cfg, bad_url,
			 "environment variable SALLYPORT_URL: key \"url\": \"ftp://x\" is not a "
			 "valid URL (scheme must be http or https)");
	char *bad_secret[] = {"SALLYPORT_ENROLL_TOKEN=line1\nline2", NULL};
	expect_env_error(cfg, bad_secret,
			 "environment variable SALLYPORT_ENROLL_TOKEN: key \"enroll_token\": the "
			 "value contains a control character");
	char *bad_duration[] = {"SALLYPORT_IDLE_TIMEOUT=2h", NULL};
	expect_env_error(
	    cfg, bad_duration,
	    "environment variable SALLYPORT_IDLE_TIMEOUT: key \"idle_timeout\": \"2h\" "
	    "is out of range (must be between 1s and 1h)");
	/* A long value is cut in the diag. */
	char long_env[200];
	snprintf(long_env, sizeof(long_env), "SALLYPORT_LOG_LEVEL=%0100d", 0);
	char *bad_enum[] = {long_env, NULL};
	expect_env_error(cfg, bad_enum,
			 "environment variable SALLYPORT_LOG_LEVEL: key \"log_level\": "
			 "\"0000000000000000000000000000000000000000000000000000000000000000...\" "
			 "is not one of: debug, info, warn, error");
	/* Values are capped. */
	char *huge = malloc(SP_CONFIG_VALUE_MAX + 32);
	assert_non_null(huge);
	int n = snprintf(huge, 32, "SALLYPORT_NAME=");
	memset(huge + n, 'v', SP_CONFIG_VALUE_MAX + 1);
	huge[n + SP_CONFIG_VALUE_MAX + 1] = '\0';
	char *bad_huge[] = {huge, NULL};
	char *before = dump_all(cfg);
	assert_int_equal(sp_config_apply_env(cfg, bad_huge, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "is too long (at most 4096 bytes)"));
	huge[n + SP_CONFIG_VALUE_MAX] = '\0';
	assert_int_equal(sp_config_apply_env(cfg, bad_huge, &d), 0);
	assert_int_equal(strlen(sp_config_get_str(cfg, "name")), SP_CONFIG_VALUE_MAX);
	free(huge);
	free(before);
}

/* ---- flags -------------------------------------------------------------------------------- */

static void test_flags(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d;
	int rest = -1;
	int b;
	char *argv[] = {"sallyport", "--http_listen",  "[::1]:9443", "--workers=32",
			"--no-tls",  "--print-config", "--name",     "-dash-value",
			"--",	     "--not-a-flag",   NULL};
	assert_int_equal(sp_config_apply_args(cfg, 10, argv, &rest, &d), 0);
	assert_int_equal(rest, 9);
	assert_string_equal(sp_config_get_str(cfg, "http_listen"), "[::1]:9443");
	assert_string_equal(sp_config_source(cfg, "http_listen"), "flag --http-listen");
	assert_int_equal(sp_config_get_bool(cfg, "tls", &b), 0);
	assert_int_equal(b, 0);
	assert_string_equal(sp_config_source(cfg, "tls"), "flag --tls");
	assert_int_equal(sp_config_get_bool(cfg, "print_config", &b), 0);
	assert_int_equal(b, 1);
	assert_string_equal(sp_config_get_str(cfg, "name"), "-dash-value");

	/* A bool takes no separate argument; --tls=no works; "-" is an operand. */
	char *argv2[] = {"sallyport", "--tls", "up", NULL};
	assert_int_equal(sp_config_apply_args(cfg, 3, argv2, &rest, &d), 0);
	assert_int_equal(rest, 2);
	assert_int_equal(sp_config_get_bool(cfg, "tls", &b), 0);
	assert_int_equal(b, 1);
	char *argv3[] = {"sallyport", "--tls=no", "-", NULL};
	assert_int_equal(sp_config_apply_args(cfg, 3, argv3, &rest, &d), 0);
	assert_int_equal(rest, 2);
	assert_int_equal(sp_config_get_bool(cfg, "tls", &b), 0);
	assert_int_equal(b, 0);
	/* No arguments at all. */
	char *argv4[] = {"sallyport", NULL};
	assert_int_equal(sp_config_apply_args(cfg, 1, argv4, &rest, &d), 0);
	assert_int_equal(rest, 1);
	assert_int_equal(sp_config_apply_args(cfg, 0, argv4, &rest, &d), 0);
	assert_int_equal(rest, 0);
	assert_string_equal(sp_config_source(cfg, "tls"), "default");

	char *keep[] = {"sallyport", "--workers", "5", NULL};
	assert_int_equal(sp_config_apply_args(cfg, 3, keep, &rest, &d), 0);

	char *e1[] = {"p", "--workers", "6", "--http-listn=1.2.3.4:5", NULL};
	expect_args_error(cfg, 4, e1, SP_ERR_INVALID, "unknown flag \"--http-listn\"");
	char *e2[] = {"p", "-v", NULL};
	expect_args_error(cfg, 2, e2, SP_ERR_INVALID,
			  "unknown flag \"-v\" (flags are spelled --name)");
	char *e3[] = {"p", "--workers", NULL};
	expect_args_error(cfg, 2, e3, SP_ERR_INVALID,
			  "flag --workers: key \"workers\" needs a value");
	char *e4[] = {"p", "--workers=2", "--workers", "3", NULL};
	expect_args_error(cfg, 4, e4, SP_ERR_EXISTS,
			  "flag --workers: key \"workers\" is given more than once");
	char *e5[] = {"p", "--http-listen", "localhost", NULL};
	expect_args_error(cfg, 3, e5, SP_ERR_INVALID,
			  "flag --http-listen: key \"http_listen\": \"localhost\" is not a valid "
			  "address (expected HOST:PORT)");
	char *e6[] = {"p", "--no-workers", NULL};
	expect_args_error(cfg, 2, e6, SP_ERR_INVALID, "unknown flag \"--no-workers\"");
	char *e7[] = {"p", "--no-tls=true", NULL};
	expect_args_error(cfg, 2, e7, SP_ERR_INVALID, "unknown flag \"--no-tls\"");
	char *e8[] = {"p", "--tls", "--no-tls", NULL};
	expect_args_error(cfg, 3, e8, SP_ERR_EXISTS,
			  "flag --tls: key \"tls\" is given more than once");
	char *e9[] = {"p", "--log-level=trace", NULL};
	expect_args_error(cfg, 2, e9, SP_ERR_INVALID,
			  "flag --log-level: key \"log_level\": \"trace\" is not one of: debug, "
			  "info, warn, error");
	char *e10[] = {"p", "--enroll-token", "bad\ttoken", NULL};
	expect_args_error(cfg, 3, e10, SP_ERR_INVALID,
			  "flag --enroll-token: key \"enroll_token\": the value contains a control "
			  "character");
	int64_t v;
	assert_int_equal(sp_config_get_int(cfg, "workers", &v), 0);
	assert_int_equal(v, 5);
}

/* ---- value parsers at their boundaries --------------------------------------------------- */

static void test_duration_boundaries(void **state)
{
	(void)state;
	const struct {
		const char *text;
		int64_t ms;
	} good[] = {
	    {"0", 0},
	    {"0s", 0},
	    {"0ms", 0},
	    {"1ms", 1},
	    {"30s", 30000},
	    {"5m", 300000},
	    {"1h", 3600000},
	    {"2d", 172800000},
	    {"1h30m", 5400000},
	    {"1m1ms", 60001},
	    {"007s", 7000},
	    {"9223372036854775807ms", INT64_MAX},
	    {"106751991167d", INT64_C(9223372036828800000)},
	    {"106751991167d25975s", INT64_C(9223372036854775000)},
	};
	struct sp_diag d;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		int64_t ms = -1;
		int r = sp_config_parse_duration(good[i].text, &ms, &d);
		if (r != 0)
			fail_msg("%s: %s", good[i].text, d.message);
		assert_true(ms == good[i].ms);
	}
	const char *syntax[] = {"",   "s",  "10",  "-1s", "1.5s", "1 s", " 1s", "1s ",
				"1S", "1x", "1s1", "ms",  "1sec", "1hh", "00"};
	for (size_t i = 0; i < sizeof(syntax) / sizeof(syntax[0]); i++) {
		int64_t ms = 5;
		assert_int_equal(sp_config_parse_duration(syntax[i], &ms, &d), SP_ERR_INVALID);
		assert_true(ms == 0);
		assert_non_null(strstr(d.message,
				       "is not a valid duration (expected a number and a "
				       "unit: ms, s, m, h or d, e.g. 30s)"));
	}
	const char *big[] = {"9223372036854775808ms", "106751991168d", "9223372036854776s",
			     "106751991167d25976s", "99999999999999999999999h"};
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
		int64_t ms = 5;
		assert_int_equal(sp_config_parse_duration(big[i], &ms, &d), SP_ERR_INVALID);
		assert_true(ms == 0);
		assert_non_null(strstr(d.message, "is too large a duration"));
	}
	assert_int_equal(sp_config_parse_duration("1x", &(int64_t){0}, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "\"1x\" is not a valid duration (expected a number and a "
				       "unit: ms, s, m, h or d, e.g. 30s)");
	assert_int_equal(sp_config_parse_duration(NULL, &(int64_t){0}, NULL), SP_ERR_INVALID);
}

static void test_duration_range_in_schema(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d;
	int64_t v;
	/* idle_timeout is bounded to [1s, 1h]. */
	assert_int_equal(apply_file(cfg, "idle_timeout = 1s\n", &d), 0);
	assert_int_equal(sp_config_get_duration_ms(cfg, "idle_timeout", &v), 0);
	assert_int_equal(v, 1000);
	assert_int_equal(apply_file(cfg, "idle_timeout = 3600000ms\n", &d), 0);
	expect_file_error(
	    cfg, "idle_timeout = 999ms\n", SP_ERR_INVALID,
	    "config file /etc/sallyport/controller.conf line 1: key "
	    "\"idle_timeout\": \"999ms\" is out of range (must be between 1s and 1h)");
	expect_file_error(
	    cfg, "idle_timeout = 1h1ms\n", SP_ERR_INVALID,
	    "config file /etc/sallyport/controller.conf line 1: key "
	    "\"idle_timeout\": \"1h1ms\" is out of range (must be between 1s and 1h)");
	expect_file_error(cfg, "idle_timeout = 0\n", SP_ERR_INVALID,
			  "config file /etc/sallyport/controller.conf line 1: key "
			  "\"idle_timeout\": \"0\" is out of range (must be between 1s and 1h)");
	expect_file_error(
	    cfg, "grace = 30\n", SP_ERR_INVALID,
	    "config file /etc/sallyport/controller.conf line 1: key \"grace\": \"30\" "
	    "is not a valid duration (expected a number and a unit: ms, s, m, h or "
	    "d, e.g. 30s)");
}

static void test_address_boundaries(void **state)
{
	(void)state;
	const struct {
		const char *text;
		const char *host;
		uint16_t port;
	} good[] = {
	    {"127.0.0.1:1", "127.0.0.1", 1},
	    {"0.0.0.0:65535", "0.0.0.0", 65535},
	    {"[::1]:443", "::1", 443},
	    {"[::]:8443", "::", 8443},
	    {"[2001:db8::8:800:200c:417a]:80", "2001:db8::8:800:200c:417a", 80},
	    {"localhost:8080", "localhost", 8080},
	    {"controller.example.com:00443", "controller.example.com", 443},
	    {"under_score.example:1", "under_score.example", 1},
	    {"a1-b2.c3:2", "a1-b2.c3", 2},
	};
	struct sp_diag d;
	char host[SP_CONFIG_HOST_MAX];
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint16_t port = 0;
		int r = sp_config_parse_address(good[i].text, host, sizeof(host), &port, &d);
		if (r != 0)
			fail_msg("%s: %s", good[i].text, d.message);
		assert_string_equal(host, good[i].host);
		assert_int_equal(port, good[i].port);
	}
	const struct {
		const char *text;
		const char *why;
	} bad[] = {
	    {"127.0.0.1:0", "port must be 1-65535"},
	    {"127.0.0.1:65536", "port must be 1-65535"},
	    {"127.0.0.1:99999", "port must be 1-65535"},
	    {"127.0.0.1:123456", "port must be 1-65535"},
	    {"127.0.0.1:", "port must be 1-65535"},
	    {"127.0.0.1:-1", "port must be 1-65535"},
	    {"127.0.0.1: 80", "port must be 1-65535"},
	    {"127.0.0.1", "expected HOST:PORT"},
	    {"", "host is missing"},
	    {":8443", "host is missing"},
	    {"::1:443", "IPv6 addresses go in brackets, e.g. [::1]:443"},
	    {"[::1]", "expected HOST:PORT"},
	    {"[::1]443", "unexpected text after \"]\""},
	    {"[::1:443", "missing \"]\" after the IPv6 address"},
	    {"[]:443", "bad IPv6 address"},
	    {"[fe80::1%eth0]:443", "bad IPv6 address"},
	    {"[127.0.0.1]:443", "bad IPv6 address"},
	    {"256.0.0.1:80", "bad IPv4 address"},
	    {"1.2.3:80", "bad IPv4 address"},
	    {"-lead.example:80", "bad host name"},
	    {"trail-.example:80", "bad host name"},
	    {"a..b:80", "bad host name"},
	    {"a.b.:80", "bad host name"},
	    {".a:80", "bad host name"},
	    {"sp ace:80", "bad host name"},
	    {"h\xc3\xa9:80", "bad host name"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint16_t port = 7;
		snprintf(host, sizeof(host), "%s", "junk");
		assert_int_equal(
		    sp_config_parse_address(bad[i].text, host, sizeof(host), &port, &d),
		    SP_ERR_INVALID);
		assert_int_equal(port, 0);
		assert_string_equal(host, "");
		char want[256];
		snprintf(want, sizeof(want), "is not a valid address (%s)", bad[i].why);
		if (strstr(d.message, want) == NULL)
			fail_msg("%s: got %s, want %s", bad[i].text, d.message, want);
	}
	/* Label and name lengths: 63 is the most for a label, 253 for a name. */
	char name[300];
	memset(name, 'a', 63);
	snprintf(name + 63, sizeof(name) - 63, "%s", ".x:1");
	uint16_t port;
	assert_int_equal(sp_config_parse_address(name, host, sizeof(host), &port, &d), 0);
	memset(name, 'a', 64);
	snprintf(name + 64, sizeof(name) - 64, "%s", ".x:1");
	assert_int_equal(sp_config_parse_address(name, host, sizeof(host), &port, &d),
			 SP_ERR_INVALID);
	/* 4 labels of 63 plus 3 dots = 255 > 253. */
	size_t o = 0;
	for (int i = 0; i < 4; i++) {
		memset(name + o, 'b', 63);
		o += 63;
		name[o++] = '.';
	}
	snprintf(name + o - 1, sizeof(name) - (o - 1), "%s", ":1");
	assert_int_equal(sp_config_parse_address(name, host, sizeof(host), &port, &d),
			 SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "(host name is too long)"));
	/* The caller's host buffer bounds the copy. */
	assert_int_equal(sp_config_parse_address("abcdef:1", host, 4, &port, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "(host name is too long)"));
	assert_int_equal(sp_config_parse_address("abc:1", host, 4, &port, NULL), 0);
	assert_string_equal(host, "abc");
}

static void test_url_values(void **state)
{
	struct sp_config *cfg = *state;
	const char *good[] = {"https://controller.example.com",
			      "https://c.example.com:8443/v1?a=b",
			      "HTTP://127.0.0.1:8080/",
			      "https://[::1]:8443/x",
			      "http://h#frag",
			      "https://h?q"};
	struct sp_diag d;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char entry[128];
		snprintf(entry, sizeof(entry), "SALLYPORT_URL=%s", good[i]);
		char *env[] = {entry, NULL};
		int r = sp_config_apply_env(cfg, env, &d);
		if (r != 0)
			fail_msg("%s: %s", good[i], d.message);
		assert_string_equal(sp_config_get_str(cfg, "url"), good[i]);
	}
	const struct {
		const char *text;
		const char *why;
	} bad[] = {
	    {"ftp://x", "scheme must be http or https"},
	    {"controller.example.com", "scheme must be http or https"},
	    {"https:/x", "scheme must be http or https"},
	    {"https://", "host is missing"},
	    {"https:///path", "host is missing"},
	    {"https://:443", "host is missing"},
	    {"https://user:pw@x.example", "user names and passwords are not allowed in the URL"},
	    {"https://x.example/a b", "spaces and non-ASCII characters must be percent-encoded"},
	    {"https://h\xc3\xa9.example", "spaces and non-ASCII characters must be "
					  "percent-encoded"},
	    {"https://x.example:99999/", "port must be 1-65535"},
	    {"https://x.example:/", "port must be 1-65535"},
	    {"https://[::1/", "missing \"]\" after the IPv6 address"},
	    {"https://bad_label-.example", "bad host name"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char entry[128], want[256];
		snprintf(entry, sizeof(entry), "SALLYPORT_URL=%s", bad[i].text);
		char *env[] = {entry, NULL};
		assert_int_equal(sp_config_apply_env(cfg, env, &d), SP_ERR_INVALID);
		snprintf(want, sizeof(want), "is not a valid URL (%s)", bad[i].why);
		if (strstr(d.message, want) == NULL)
			fail_msg("%s: got %s, want %s", bad[i].text, d.message, want);
	}
}

static void test_int_and_bool_values(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d;
	int64_t v;
	int b;
	const struct {
		const char *text;
		int64_t value;
	} good[] = {{"0", 0},
		    {"-0", 0},
		    {"-1", -1},
		    {"0042", 42},
		    {"9223372036854775807", INT64_MAX},
		    {"-9223372036854775808", INT64_MIN}};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char line[64];
		snprintf(line, sizeof(line), "offset = %s\n", good[i].text);
		assert_int_equal(apply_file(cfg, line, &d), 0);
		assert_int_equal(sp_config_get_int(cfg, "offset", &v), 0);
		assert_true(v == good[i].value);
	}
	const char *not_int[] = {"+1", "1.0", "0x10", "1e3", "-", "--1", "1-", "one"};
	for (size_t i = 0; i < sizeof(not_int) / sizeof(not_int[0]); i++) {
		char line[64];
		snprintf(line, sizeof(line), "offset = %s\n", not_int[i]);
		assert_int_equal(apply_file(cfg, line, &d), SP_ERR_INVALID);
		assert_non_null(strstr(d.message, "is not an integer"));
	}
	const char *too_big[] = {"9223372036854775808", "-9223372036854775809",
				 "99999999999999999999999"};
	for (size_t i = 0; i < sizeof(too_big) / sizeof(too_big[0]); i++) {
		char line[64];
		snprintf(line, sizeof(line), "offset = %s\n", too_big[i]);
		assert_int_equal(apply_file(cfg, line, &d), SP_ERR_INVALID);
		assert_non_null(strstr(d.message, "is out of range (must be between "
						  "-9223372036854775808 and 9223372036854775807)"));
	}
	assert_int_equal(apply_file(cfg, "workers = 1\n", &d), 0);
	assert_int_equal(apply_file(cfg, "workers = 64\n", &d), 0);

	const char *truthy[] = {"true", "TRUE", "yes", "On", "1"};
	const char *falsy[] = {"false", "No", "off", "0", "FaLsE"};
	for (size_t i = 0; i < 5; i++) {
		char line[64];
		snprintf(line, sizeof(line), "tls = %s\n", truthy[i]);
		assert_int_equal(apply_file(cfg, line, &d), 0);
		assert_int_equal(sp_config_get_bool(cfg, "tls", &b), 0);
		assert_int_equal(b, 1);
		assert_string_equal(sp_config_get_str(cfg, "tls"), "true");
		snprintf(line, sizeof(line), "tls = %s\n", falsy[i]);
		assert_int_equal(apply_file(cfg, line, &d), 0);
		assert_int_equal(sp_config_get_bool(cfg, "tls", &b), 0);
		assert_int_equal(b, 0);
	}
	assert_int_equal(apply_file(cfg, "tls = 2\n", &d), SP_ERR_INVALID);
	assert_int_equal(apply_file(cfg, "tls = truee\n", &d), SP_ERR_INVALID);
	assert_int_equal(apply_file(cfg, "tls = t\n", &d), SP_ERR_INVALID);
}

static void test_path_values(void **state)
{
	struct sp_config *cfg = *state;
	struct sp_diag d;
	char *entry = malloc(SP_CONFIG_PATH_MAX + 64);
	assert_non_null(entry);
	int n = snprintf(entry, 64, "SALLYPORT_STATE_DIR=/");
	memset(entry + n, 'p', SP_CONFIG_PATH_MAX - 1);
	entry[n + SP_CONFIG_PATH_MAX - 1] = '\0';
	char *env[] = {entry, NULL};
	assert_int_equal(sp_config_apply_env(cfg, env, &d), 0);
	assert_int_equal(strlen(sp_config_get_str(cfg, "state_dir")), SP_CONFIG_PATH_MAX);
	entry[n + SP_CONFIG_PATH_MAX - 1] = 'p';
	entry[n + SP_CONFIG_PATH_MAX] = '\0';
	assert_int_equal(sp_config_apply_env(cfg, env, &d), SP_ERR_INVALID);
	assert_non_null(strstr(d.message, "is too long for a path (at most 4095 bytes)"));
	free(entry);
	assert_int_equal(sp_config_apply_env(cfg, NULL, &d), 0);
	assert_int_equal(apply_file(cfg, "state_dir = relative/dir\n", &d), 0);
	assert_string_equal(sp_config_get_str(cfg, "state_dir"), "relative/dir");
	assert_int_equal(apply_file(cfg, "state_dir = \"/with\ttab\"\n", &d), SP_ERR_INVALID);
}

/* ---- dump, help, required, schema ------------------------------------------------------ */

static const struct sp_config_key small_schema[] = {
    {"http_listen", SP_CONFIG_ADDRESS, "0.0.0.0:8443", "API address.", 0, 0, 0, NULL},
    {"enroll_token", SP_CONFIG_STRING, NULL, "Enrollment token.",
     SP_CONFIG_SECRET | SP_CONFIG_REQUIRED, 0, 0, NULL},
    {"name", SP_CONFIG_STRING, NULL, NULL, 0, 0, 0, NULL},
    {"log_level", SP_CONFIG_ENUM, "info", "Least severe level logged.", 0, 0, 0, levels},
    {"workers", SP_CONFIG_INT, "4", "Threads.", 0, 1, 64, NULL},
    {"idle", SP_CONFIG_DURATION, "5m", "Idle timeout.", 0, 1000, 86400000, NULL},
    {"tls", SP_CONFIG_BOOL, "true", "Serve TLS.", 0, 0, 0, NULL},
    {"url", SP_CONFIG_URL, NULL, "Controller URL.", 0, 0, 0, NULL},
    {"state_dir", SP_CONFIG_PATH, "/var/lib/sallyport", "State.", 0, 0, 0, NULL},
    {"config", SP_CONFIG_PATH, NULL, "Config file.", SP_CONFIG_NOT_IN_FILE, 0, 0, NULL},
    {"help", SP_CONFIG_BOOL, NULL, "Show this help.", SP_CONFIG_FLAG_ONLY, 0, 0, NULL},
};
#define SMALL_COUNT (sizeof(small_schema) / sizeof(small_schema[0]))

static void test_dump_redacts_and_reads_back(void **state)
{
	(void)state;
	struct sp_config cfg, back;
	struct sp_diag d;
	assert_int_equal(sp_config_init(&cfg, small_schema, SMALL_COUNT, &d), 0);
	assert_int_equal(sp_config_check_required(&cfg, &d), SP_ERR_NOT_FOUND);
	assert_string_equal(d.message, "key \"enroll_token\" is required but not set (set "
				       "SALLYPORT_ENROLL_TOKEN or --enroll-token)");
	/* An empty value is accepted as "not set"; the required check is what fails. */
	char *empty[] = {"SALLYPORT_ENROLL_TOKEN=", NULL};
	assert_int_equal(sp_config_apply_env(&cfg, empty, &d), 0);
	assert_int_equal(sp_config_check_required(&cfg, &d), SP_ERR_NOT_FOUND);
	char *env[] = {"SALLYPORT_ENROLL_TOKEN=sup3r-s3cret-t0ken", "SALLYPORT_NAME=a \"b\" \\c",
		       NULL};
	assert_int_equal(sp_config_apply_env(&cfg, env, &d), 0);
	assert_int_equal(sp_config_check_required(&cfg, &d), 0);
	char *argv[] = {"p", "--workers=8", "--url=", NULL};
	int rest;
	assert_int_equal(sp_config_apply_args(&cfg, 3, argv, &rest, &d), 0);

	struct sp_buf b;
	sp_buf_init(&b, 0);
	assert_int_equal(sp_config_dump(&cfg, 0, &b), 0);
	assert_string_equal(sp_buf_cstr(&b),
			    "http_listen = \"0.0.0.0:8443\"  # default\n"
			    "enroll_token = \"[redacted]\"  # env SALLYPORT_ENROLL_TOKEN\n"
			    "name = \"a \\\"b\\\" \\\\c\"  # env SALLYPORT_NAME\n"
			    "log_level = \"info\"  # default\n"
			    "workers = \"8\"  # flag --workers\n"
			    "idle = \"5m\"  # default\n"
			    "tls = \"true\"  # default\n"
			    "url = \"\"  # not set (flag --url)\n"
			    "state_dir = \"/var/lib/sallyport\"  # default\n"
			    "config = \"\"  # not set\n"
			    "help = \"\"  # not set\n");
	assert_null(strstr(sp_buf_cstr(&b), "s3cret"));

	/* The dump (without flag-only keys) reads back as a config file. */
	assert_int_equal(sp_config_init(&back, small_schema, SMALL_COUNT, &d), 0);
	assert_int_equal(sp_config_file_begin(&back, "dump"), 0);
	const char *p = sp_buf_cstr(&b);
	unsigned lineno = 1;
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t n = (size_t)(nl - p) + 1;
		if (strncmp(p, "config", 6) != 0 && strncmp(p, "help", 4) != 0)
			assert_int_equal(sp_config_feed_line(&back, p, n, lineno, &d), 0);
		lineno++;
		p += n;
	}
	assert_int_equal(sp_config_file_commit(&back, &d), 0);
	assert_string_equal(sp_config_get_str(&back, "name"), "a \"b\" \\c");
	assert_string_equal(sp_config_get_str(&back, "enroll_token"), "[redacted]");
	assert_string_equal(sp_config_get_str(&back, "workers"), "8");
	assert_null(sp_config_get_str(&back, "url"));
	sp_config_free(&back);

	sp_buf_reset(&b);
	assert_int_equal(sp_config_dump(&cfg, 1, &b), 0);
	assert_non_null(strstr(sp_buf_cstr(&b), "workers = \"8\"  # flag --workers\n"
						"#   default: \"4\" (default)\n"
						"#   flag: \"8\" (flag --workers)\n"));
	assert_non_null(strstr(sp_buf_cstr(&b),
			       "enroll_token = \"[redacted]\"  # env SALLYPORT_ENROLL_TOKEN\n"
			       "#   env: \"[redacted]\" (env SALLYPORT_ENROLL_TOKEN)\n"));
	assert_null(strstr(sp_buf_cstr(&b), "s3cret"));

	/* A dump that does not fit reports it. */
	struct sp_buf small;
	uint8_t storage[64];
	sp_buf_init_fixed(&small, storage, sizeof(storage));
	assert_int_equal(sp_config_dump(&cfg, 0, &small), SP_ERR_TOO_LARGE);
	sp_buf_free(&b);
	sp_config_free(&cfg);
}

static void test_help_text(void **state)
{
	(void)state;
	struct sp_buf b;
	sp_buf_init(&b, 0);
	assert_int_equal(sp_config_help(small_schema, SMALL_COUNT, &b), 0);
	assert_string_equal(sp_buf_cstr(&b),
			    "  --http-listen HOST:PORT\n"
			    "      API address.\n"
			    "      env SALLYPORT_HTTP_LISTEN; default \"0.0.0.0:8443\"\n"
			    "  --enroll-token TEXT\n"
			    "      Enrollment token.\n"
			    "      env SALLYPORT_ENROLL_TOKEN; required; secret\n"
			    "  --name TEXT\n"
			    "      env SALLYPORT_NAME\n"
			    "  --log-level debug|info|warn|error\n"
			    "      Least severe level logged.\n"
			    "      env SALLYPORT_LOG_LEVEL; default \"info\"\n"
			    "  --workers N\n"
			    "      Threads.\n"
			    "      env SALLYPORT_WORKERS; default \"4\"; 1 to 64\n"
			    "  --idle DURATION\n"
			    "      Idle timeout.\n"
			    "      env SALLYPORT_IDLE; default \"5m\"; 1s to 1d\n"
			    "  --tls, --no-tls\n"
			    "      Serve TLS.\n"
			    "      env SALLYPORT_TLS; default \"true\"\n"
			    "  --url URL\n"
			    "      Controller URL.\n"
			    "      env SALLYPORT_URL\n"
			    "  --state-dir PATH\n"
			    "      State.\n"
			    "      env SALLYPORT_STATE_DIR; default \"/var/lib/sallyport\"\n"
			    "  --config PATH\n"
			    "      Config file.\n"
			    "      env SALLYPORT_CONFIG; not in the config file\n"
			    "  --help, --no-help\n"
			    "      Show this help.\n"
			    "      command line only\n");
	sp_buf_free(&b);
	/* A secret default is never shown. */
	const struct sp_config_key secret_default[] = {
	    {"token", SP_CONFIG_STRING, "dev-token-123", NULL, SP_CONFIG_SECRET, 0, 0, NULL},
	};
	sp_buf_init(&b, 0);
	assert_int_equal(sp_config_help(secret_default, 1, &b), 0);
	assert_string_equal(sp_buf_cstr(&b), "  --token TEXT\n"
					     "      env SALLYPORT_TOKEN; default \"[redacted]\"; "
					     "secret\n");
	sp_buf_free(&b);
}

static void test_schema_errors(void **state)
{
	(void)state;
	struct sp_config cfg;
	struct sp_diag d;
	const struct sp_config_key bad_name[] = {
	    {"Http", SP_CONFIG_STRING, NULL, NULL, 0, 0, 0, NULL}};
	assert_int_equal(sp_config_init(&cfg, bad_name, 1, &d), SP_ERR_INVALID);
	assert_string_equal(d.message,
			    "config schema: key 0: name must be [a-z][a-z0-9_]*, at most 64 bytes");
	assert_null(cfg.slots);
	const struct sp_config_key dash[] = {
	    {"http-listen", SP_CONFIG_STRING, NULL, NULL, 0, 0, 0, NULL}};
	assert_int_equal(sp_config_init(&cfg, dash, 1, &d), SP_ERR_INVALID);
	assert_string_equal(d.message,
			    "config schema: key \"http-listen\": name must be [a-z][a-z0-9_]*");
	const struct sp_config_key twice[] = {
	    {"a", SP_CONFIG_STRING, NULL, NULL, 0, 0, 0, NULL},
	    {"a", SP_CONFIG_INT, NULL, NULL, 0, 0, 0, NULL},
	};
	assert_int_equal(sp_config_init(&cfg, twice, 2, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "config schema: key \"a\" is defined twice");
	const struct sp_config_key no_allowed[] = {
	    {"e", SP_CONFIG_ENUM, NULL, NULL, 0, 0, 0, NULL}};
	assert_int_equal(sp_config_init(&cfg, no_allowed, 1, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "config schema: key \"e\": an enum needs allowed values");
	const struct sp_config_key bad_default[] = {
	    {"a", SP_CONFIG_STRING, "ok", NULL, 0, 0, 0, NULL},
	    {"port", SP_CONFIG_INT, "70000", NULL, 0, 1, 65535, NULL},
	};
	assert_int_equal(sp_config_init(&cfg, bad_default, 2, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "config schema default: key \"port\": \"70000\" is out of "
				       "range (must be between 1 and 65535)");
	assert_null(cfg.slots);
	const struct sp_config_key bounds[] = {{"n", SP_CONFIG_INT, NULL, NULL, 0, 5, 1, NULL}};
	assert_int_equal(sp_config_init(&cfg, bounds, 1, &d), SP_ERR_INVALID);
	assert_string_equal(d.message, "config schema: key \"n\": min > max");
	const struct sp_config_key type[] = {
	    {"t", (enum sp_config_type)42, NULL, NULL, 0, 0, 0, NULL}};
	assert_int_equal(sp_config_init(&cfg, type, 1, &d), SP_ERR_INVALID);
	assert_int_equal(sp_config_init(&cfg, NULL, 1, &d), SP_ERR_INVALID);
	assert_int_equal(sp_config_init(&cfg, bounds, SP_CONFIG_KEYS_MAX + 1, &d),
			 SP_ERR_TOO_LARGE);
	/* An empty schema works and knows nothing. */
	assert_int_equal(sp_config_init(&cfg, NULL, 0, &d), 0);
	char *env[] = {"SALLYPORT_X=1", NULL};
	assert_int_equal(sp_config_apply_env(&cfg, env, &d), 0);
	assert_null(sp_config_get_str(&cfg, "x"));
	sp_config_free(&cfg);
	sp_config_free(&cfg);
	sp_config_free(NULL);
	/* Using a zeroed, uninitialised config is refused, not a crash. */
	struct sp_config zero = {0};
	int rest;
	assert_int_equal(sp_config_apply_env(&zero, env, &d), SP_ERR_INVALID);
	assert_int_equal(sp_config_apply_args(&zero, 1, env, &rest, &d), SP_ERR_INVALID);
	assert_int_equal(sp_config_file_begin(&zero, "x"), SP_ERR_INVALID);
	assert_null(sp_config_get_str(&zero, "x"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_defaults_and_getters, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_precedence_all_layers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_value_means_not_set, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_syntax, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_errors_name_key_and_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_file_nul_and_overlong_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_load_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_env_layer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flags, setup, teardown),
	    cmocka_unit_test(test_duration_boundaries),
	    cmocka_unit_test_setup_teardown(test_duration_range_in_schema, setup, teardown),
	    cmocka_unit_test(test_address_boundaries),
	    cmocka_unit_test_setup_teardown(test_url_values, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_int_and_bool_values, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_path_values, setup, teardown),
	    cmocka_unit_test(test_dump_redacts_and_reads_back),
	    cmocka_unit_test(test_help_text),
	    cmocka_unit_test(test_schema_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
