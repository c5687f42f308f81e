/*
 * Tests for the console part of controller/gate.c: admin routes admit a console session
 * cookie of an admin (read and write) or auditor (read only), read the role live from the
 * users table, demand X-CSRF-Token on state-changing requests made with the cookie, and
 * exempt API keys from CSRF. A real server on 127.0.0.1 driven by libcurl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "controller/apikey.h"
#include "controller/app.h"
#include "controller/auth.h"
#include "controller/db.h"

static char dir[64];
static struct controller ctl;
static struct http_server *server;

static int64_t wall(void)
{
	return (int64_t)time(NULL);
}

static void handle_ok(struct http_request *req, void *app)
{
	(void)app;
	http_reply_json(req, 200, json_pack("{s:s, s:i}", "actor", req->actor_type,
	                                    "role", (int)req->actor_role));
}

static const struct route routes[] = {
	{"GET", "/read", (void *)handle_ok, ROUTE_ADMIN_READ},
	{"POST", "/write", (void *)handle_ok, ROUTE_ADMIN_WRITE},
	{"DELETE", "/write", (void *)handle_ok, ROUTE_ADMIN_WRITE},
};

static void exec(const char *sql)
{
	assert_int_equal(db_exec(ctl.db, sql), 0);
}

static void add_user(const char *id, const char *role, int disabled)
{
	char sql[512];
	snprintf(sql, sizeof(sql),
	         "INSERT INTO users (id, issuer, subject, email, role, disabled, created_at,"
	         " updated_at) VALUES ('%s', 'https://idp', '%s', '%s@example.com', '%s', %d, 1, 1)",
	         id, id, role, role, disabled);
	exec(sql);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/sp-gate-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	char path[128];
	snprintf(path, sizeof(path), "%s/controller.db", dir);
	int applied = 0;
	memset(&ctl, 0, sizeof(ctl));
	ctl.now = wall;
	snprintf(ctl.settings.public_url, sizeof(ctl.settings.public_url), "http://127.0.0.1");
	if (db_open(&db_sqlite_driver, path, 0, &ctl.db, NULL) < 0 ||
	    db_migrate(ctl.db, &applied, NULL) < 0 ||
	    authority_open(&ctl.authority, ctl.db, NULL, wall(), NULL) < 0 ||
	    auth_open(&ctl, NULL) < 0)
		return -1;
	struct http_server_options o = {.listen = "127.0.0.1:0",
	                                .routes = routes,
	                                .route_count = sizeof(routes) / sizeof(routes[0]),
	                                .app = &ctl,
	                                .gate = controller_gate};
	return http_server_start(&o, &server, NULL) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	http_server_stop(server);
	auth_close(&ctl);
	authority_close(&ctl.authority);
	db_close(ctl.db);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

struct reply {
	char body[2048];
	size_t len;
};

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
	struct reply *r = user;
	size_t len = size * n, room = sizeof(r->body) - 1 - r->len;
	size_t take = len < room ? len : room;
	memcpy(r->body + r->len, data, take);
	r->len += take;
	r->body[r->len] = '\0';
	return len;
}

/* Sends one request; cookie, csrf and bearer may be NULL. Returns the status. */
static long send_request(const char *method, const char *path, const char *cookie,
                         const char *csrf, const char *bearer, struct reply *out)
{
	char url[128], h[256];
	memset(out, 0, sizeof(*out));
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", http_server_port(server), path);
	CURL *c = curl_easy_init();
	struct curl_slist *headers = NULL;
	if (csrf != NULL) {
		snprintf(h, sizeof(h), "X-CSRF-Token: %s", csrf);
		headers = curl_slist_append(headers, h);
	}
	if (bearer != NULL) {
		snprintf(h, sizeof(h), "Authorization: Bearer %s", bearer);
		headers = curl_slist_append(headers, h);
	}
	if (cookie != NULL) {
		snprintf(h, sizeof(h), AUTH_CONSOLE_COOKIE "=%s", cookie);
		curl_easy_setopt(c, CURLOPT_COOKIE, h);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	long status = 0;
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(headers);
	curl_easy_cleanup(c);
	return status;
}

#define ADMIN "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define AUDITOR "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define PLAIN "cccccccccccccccccccccccccccccccc"
#define DISABLED "dddddddddddddddddddddddddddddddd"

static void test_console_sessions(void **state)
{
	(void)state;
	struct reply r;
	add_user(ADMIN, "admin", 0);
	add_user(AUDITOR, "auditor", 0);
	add_user(PLAIN, "user", 0);
	add_user(DISABLED, "admin", 1);
	char admin[SP_SECRET_TEXT_MAX], admin_csrf[33], auditor[SP_SECRET_TEXT_MAX],
		auditor_csrf[33], plain[SP_SECRET_TEXT_MAX], plain_csrf[33],
		disabled[SP_SECRET_TEXT_MAX], disabled_csrf[33];
	assert_int_equal(auth_console_create(&ctl, ADMIN, admin, admin_csrf), 0);
	assert_int_equal(auth_console_create(&ctl, AUDITOR, auditor, auditor_csrf), 0);
	assert_int_equal(auth_console_create(&ctl, PLAIN, plain, plain_csrf), 0);
	assert_int_equal(auth_console_create(&ctl, DISABLED, disabled, disabled_csrf), 0);
	assert_int_equal(strncmp(admin, "spc_", 4), 0);
	assert_int_equal(strlen(admin_csrf), 32);

	assert_int_equal(send_request("GET", "/read", NULL, NULL, NULL, &r), 401);
	assert_int_equal(send_request("GET", "/read", "spc_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	                              NULL, NULL, &r), 401);

	/* Admin: reads; writes only with the session's CSRF token. */
	assert_int_equal(send_request("GET", "/read", admin, NULL, NULL, &r), 200);
	assert_non_null(strstr(r.body, "\"actor\":\"user\""));
	assert_int_equal(send_request("POST", "/write", admin, NULL, NULL, &r), 403);
	assert_non_null(strstr(r.body, "csrf"));
	assert_int_equal(send_request("POST", "/write", admin, auditor_csrf, NULL, &r), 403);
	assert_int_equal(send_request("POST", "/write", admin, "", NULL, &r), 403);
	assert_int_equal(send_request("POST", "/write", admin, admin_csrf, NULL, &r), 200);
	assert_int_equal(send_request("DELETE", "/write", admin, admin_csrf, NULL, &r), 200);

	/* Auditor: reads, never writes. */
	assert_int_equal(send_request("GET", "/read", auditor, NULL, NULL, &r), 200);
	assert_int_equal(send_request("POST", "/write", auditor, auditor_csrf, NULL, &r), 403);
	assert_non_null(strstr(r.body, "auditor"));

	/* A person without a console role, and a disabled admin. */
	assert_int_equal(send_request("GET", "/read", plain, NULL, NULL, &r), 403);
	assert_int_equal(send_request("GET", "/read", disabled, NULL, NULL, &r), 401);

	/* The role is read on every request: a demoted admin loses access at once. */
	exec("UPDATE users SET role = 'auditor' WHERE id = '" ADMIN "'");
	assert_int_equal(send_request("POST", "/write", admin, admin_csrf, NULL, &r), 403);
	assert_int_equal(send_request("GET", "/read", admin, NULL, NULL, &r), 200);

	/* Ending a person's console sessions (as disabling does) is for good: the row being
	 * fine again does not bring the cookie back; other people's sessions stay. */
	auth_console_end_user(&ctl, ADMIN);
	assert_int_equal(send_request("GET", "/read", admin, NULL, NULL, &r), 401);
	assert_int_equal(send_request("GET", "/read", auditor, NULL, NULL, &r), 200);

	/* API keys need no CSRF token: a browser never sends them on its own. */
	char key[SP_SECRET_TEXT_MAX], id[33];
	assert_int_equal(apikey_create(ctl.db, "ops", "admin", wall(), key, id, NULL), 0);
	assert_int_equal(send_request("POST", "/write", NULL, NULL, key, &r), 200);
	assert_non_null(strstr(r.body, "\"actor\":\"api_key\""));
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_console_sessions, setup, teardown),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return r;
}
