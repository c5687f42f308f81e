/*
 * Tests for controller/console.c: the embedded admin console served by a real HTTP
 * server on 127.0.0.1 (port 0), fetched with libcurl. Checks status, media types, the
 * security headers, that the bytes served are the files in controller/console/, and that
 * nothing else under /admin/ is served.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "controller/app.h"
#include "controller/console.h"
#include "controller/http.h"
#include "controller/routes.h"

#define MAX_HEADERS 32

struct reply {
	long status;
	char *body;
	size_t len;
	char headers[MAX_HEADERS][2][512];
	size_t header_count;
};

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
	struct reply *r = user;
	size_t len = size * n;
	char *grown = realloc(r->body, r->len + len + 1);
	if (grown == NULL)
		return 0;
	r->body = grown;
	memcpy(r->body + r->len, data, len);
	r->len += len;
	r->body[r->len] = '\0';
	return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
	struct reply *r = user;
	size_t len = size * n;
	const char *colon = memchr(data, ':', len);
	if (colon == NULL || r->header_count >= MAX_HEADERS)
		return len;
	size_t nlen = (size_t)(colon - data);
	const char *v = colon + 1;
	size_t vlen = len - nlen - 1;
	while (vlen > 0 && *v == ' ') {
		v++;
		vlen--;
	}
	while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n'))
		vlen--;
	if (nlen >= 512 || vlen >= 512)
		return len;
	memcpy(r->headers[r->header_count][0], data, nlen);
	r->headers[r->header_count][0][nlen] = '\0';
	memcpy(r->headers[r->header_count][1], v, vlen);
	r->headers[r->header_count][1][vlen] = '\0';
	r->header_count++;
	return len;
}

/* The value of a response header, or NULL; fails the test when it appears twice. */
static const char *header(const struct reply *r, const char *name)
{
	const char *found = NULL;
	for (size_t i = 0; i < r->header_count; i++) {
		if (strcasecmp(r->headers[i][0], name) == 0) {
			assert_null(found);
			found = r->headers[i][1];
		}
	}
	return found;
}

static void request(uint16_t port, const char *method, const char *path, struct reply *out)
{
	memset(out, 0, sizeof(*out));
	char url[512];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	CURL *c = curl_easy_init();
	assert_non_null(c);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* send "/admin/../x" as written */
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	curl_easy_cleanup(c);
}

static void reply_free(struct reply *r)
{
	free(r->body);
	r->body = NULL;
}

/* The file as it is in the source tree, for comparing with what is served. */
static char *read_source(const char *name, size_t *len)
{
	const char *src = getenv("SALLYPORT_SOURCE_DIR");
	assert_non_null(src);
	char path[1024];
	snprintf(path, sizeof(path), "%s/controller/console/%s", src, name);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	char *buf = NULL;
	size_t n = 0;
	char chunk[4096];
	size_t got;
	while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		char *grown = realloc(buf, n + got);
		assert_non_null(grown);
		buf = grown;
		memcpy(buf + n, chunk, got);
		n += got;
	}
	fclose(f);
	*len = n;
	return buf;
}

static struct http_server *server;

static int setup(void **state)
{
	(void)state;
	struct http_server_options o = {
		.listen = "127.0.0.1:0",
		.routes = console_routes,
		.route_count = console_route_count,
	};
	struct sp_diag d;
	return http_server_start(&o, &server, &d);
}

static int teardown(void **state)
{
	(void)state;
	http_server_stop(server);
	return 0;
}

static const char *expected_csp =
	"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

static void check_security_headers(const struct reply *r)
{
	assert_non_null(header(r, "Content-Security-Policy"));
	assert_string_equal(header(r, "Content-Security-Policy"), expected_csp);
	assert_non_null(header(r, "X-Frame-Options"));
	assert_string_equal(header(r, "X-Frame-Options"), "DENY");
	assert_non_null(header(r, "Referrer-Policy"));
	assert_string_equal(header(r, "Referrer-Policy"), "no-referrer");
	assert_non_null(header(r, "Cache-Control"));
	assert_string_equal(header(r, "Cache-Control"), "no-store");
	assert_non_null(header(r, "X-Content-Type-Options"));
	assert_string_equal(header(r, "X-Content-Type-Options"), "nosniff");
}

static void check_asset(const char *path, const char *file, const char *type)
{
	struct reply r;
	request(http_server_port(server), "GET", path, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(header(&r, "Content-Type"));
	assert_string_equal(header(&r, "Content-Type"), type);
	check_security_headers(&r);
	size_t len = 0;
	char *want = read_source(file, &len);
	assert_int_equal(r.len, len);
	assert_memory_equal(r.body, want, len);
	free(want);
	reply_free(&r);
}

static void test_assets_served(void **state)
{
	(void)state;
	check_asset("/admin/", "index.html", "text/html; charset=utf-8");
	check_asset("/admin/app.js", "app.js", "text/javascript; charset=utf-8");
	check_asset("/admin/app.css", "app.css", "text/css; charset=utf-8");
}

static void test_page_uses_only_own_files(void **state)
{
	(void)state;
	const struct console_asset *index = console_asset_find("index.html");
	assert_non_null(index);
	char *html = strndup((const char *)index->data, index->len);
	assert_non_null(html);
	assert_non_null(strstr(html, "<script src=\"/admin/app.js\" defer></script>"));
	assert_non_null(strstr(html, "<link rel=\"stylesheet\" href=\"/admin/app.css\">"));
	/* The CSP forbids inline code and other origins: the page must not need them. */
	assert_null(strstr(html, "<script>"));
	assert_null(strstr(html, "<style"));
	assert_null(strstr(html, " style="));
	assert_null(strstr(html, " onclick="));
	assert_null(strstr(html, "http://"));
	assert_null(strstr(html, "https://"));
	free(html);
	const struct console_asset *js = console_asset_find("app.js");
	assert_non_null(js);
	char *script = strndup((const char *)js->data, js->len);
	assert_non_null(script);
	assert_null(strstr(script, "innerHTML"));
	assert_null(strstr(script, "eval("));
	assert_null(strstr(script, "http://"));
	assert_null(strstr(script, "https://"));
	assert_non_null(strstr(script, "credentials: 'same-origin'"));
	assert_non_null(strstr(script, "'X-CSRF-Token'"));
	free(script);
}

static void test_redirect_to_slash(void **state)
{
	(void)state;
	struct reply r;
	request(http_server_port(server), "GET", "/admin", &r);
	assert_int_equal(r.status, 308);
	assert_non_null(header(&r, "Location"));
	assert_string_equal(header(&r, "Location"), "/admin/");
	check_security_headers(&r);
	reply_free(&r);
}

static void test_nothing_else_served(void **state)
{
	(void)state;
	uint16_t port = http_server_port(server);
	struct reply r;
	const char *missing[] = {"/admin/nope", "/admin/index.html", "/admin/app.jsx",
	                         "/admin/console/app.js", "/admin/APP.JS", "/admin/app.css.map",
	                         "/admin/x/app.js"};
	for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
		request(port, "GET", missing[i], &r);
		assert_int_equal(r.status, 404);
		assert_non_null(r.body);
		assert_non_null(strstr(r.body, "\"not_found\""));
		assert_null(header(&r, "Content-Security-Policy"));
		reply_free(&r);
	}
	/* Empty segments and a trailing '/' no route is written with: the router's 400. */
	const char *unclean[] = {"/admin//app.js", "/admin/app.js/", "/admin//", "/admin/nope/"};
	for (size_t i = 0; i < sizeof(unclean) / sizeof(unclean[0]); i++) {
		request(port, "GET", unclean[i], &r);
		assert_int_equal(r.status, 400);
		assert_non_null(r.body);
		assert_non_null(strstr(r.body, "\"bad_path\""));
		reply_free(&r);
	}
	/*
	 * Dot segments never reach a handler: the router refuses any path holding "." or
	 * ".." segments (400 bad_path), raw or percent-encoded, before routes are looked up.
	 */
	const char *dotted[] = {"/admin/../x", "/admin/../admin/app.js", "/admin/./app.js",
	                        "/admin/%2e%2e/x", "/admin/..%2fapp.js"};
	for (size_t i = 0; i < sizeof(dotted) / sizeof(dotted[0]); i++) {
		request(port, "GET", dotted[i], &r);
		assert_int_equal(r.status, 400);
		assert_non_null(r.body);
		assert_non_null(strstr(r.body, "\"error\""));
		assert_null(strstr(r.body, "<!doctype"));
		assert_null(strstr(r.body, "use strict"));
		reply_free(&r);
	}
	request(port, "POST", "/admin/", &r);
	assert_int_equal(r.status, 405);
	reply_free(&r);
}

static void test_asset_table(void **state)
{
	(void)state;
	assert_int_equal(console_asset_count, 3);
	assert_null(console_assets[console_asset_count].name); /* terminator */
	assert_non_null(console_asset_find("app.css"));
	assert_null(console_asset_find(NULL));
	assert_null(console_asset_find(""));
	assert_null(console_asset_find("../app.js"));
	assert_null(console_asset_find("app.js "));
	for (size_t i = 0; i < console_asset_count; i++) {
		assert_null(strchr(console_assets[i].name, '/'));
		assert_true(console_assets[i].len > 0);
		assert_int_equal(console_assets[i].data[console_assets[i].len], 0);
	}
	assert_string_equal(console_csp, expected_csp);
}

/* The controller's assembled table holds the console routes, all public. */
static void test_registered_public(void **state)
{
	(void)state;
	size_t count = 0;
	const struct route *table = controller_routes(&count);
	assert_non_null(table);
	size_t seen = 0;
	for (size_t i = 0; i < count; i++) {
		if (strncmp(table[i].pattern, "/admin", 6) != 0)
			continue;
		assert_string_equal(table[i].method, "GET");
		assert_int_equal(table[i].flags, ROUTE_PUBLIC);
		seen++;
	}
	assert_int_equal(seen, console_route_count);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_assets_served),
		cmocka_unit_test(test_page_uses_only_own_files),
		cmocka_unit_test(test_redirect_to_slash),
		cmocka_unit_test(test_nothing_else_served),
		cmocka_unit_test(test_asset_table),
		cmocka_unit_test(test_registered_public),
	};
	int r = cmocka_run_group_tests(tests, setup, teardown);
	curl_global_cleanup();
	return r;
}
