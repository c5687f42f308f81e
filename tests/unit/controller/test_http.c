/*
 * Tests for controller/http.c: a real server on 127.0.0.1 (port 0) driven by libcurl.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "controller/http.h"

static struct http_request *parked;
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;

static void handle_echo(struct http_request *req, void *app)
{
	(void)app;
	json_t *body = http_body_json_object(req);
	if (body == NULL)
		return;
	json_object_set_new(body, "id", json_string(router_param(&req->match, 0)));
	http_reply_json(req, 201, body);
}

static void handle_hello(struct http_request *req, void *app)
{
	(void)app;
	static const char *const known[] = {"who", NULL};
	const char *unexpected = http_query_unexpected(req, known);
	if (unexpected != NULL) {
		http_reply_error(req, 400, "invalid", "unexpected %s", unexpected);
		return;
	}
	const char *who = http_query(req, "who");
	http_reply_json(req, 200, json_pack("{s:s}", "hello", who != NULL ? who : "world"));
}

static void handle_silent(struct http_request *req, void *app)
{
	(void)req;
	(void)app;
}

/* First call parks the request; the second (after resume) answers. */
static void handle_wait(struct http_request *req, void *app)
{
	(void)app;
	if (req->state == NULL) {
		req->state = strdup("waited");
		req->state_free = free;
		pthread_mutex_lock(&parked_lock);
		parked = req;
		http_suspend(req);
		pthread_mutex_unlock(&parked_lock);
		return;
	}
	http_reply_json(req, 200, json_pack("{s:s}", "state", (const char *)req->state));
}

static const struct route routes[] = {
	{"POST", "/things/{id}", (void *)handle_echo, 0},
	{"GET", "/hello", (void *)handle_hello, 0},
	{"GET", "/silent", (void *)handle_silent, 0},
	{"GET", "/wait", (void *)handle_wait, 0},
};

struct reply {
	long status;
	char body[4096];
	size_t len;
	char allow[128];
};

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
	struct reply *r = user;
	size_t len = size * n;
	size_t room = sizeof(r->body) - 1 - r->len;
	size_t take = len < room ? len : room;
	memcpy(r->body + r->len, data, take);
	r->len += take;
	r->body[r->len] = '\0';
	return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *user)
{
	struct reply *r = user;
	size_t len = size * n;
	if (len > 7 && strncasecmp(data, "Allow: ", 7) == 0) {
		size_t v = len - 7;
		while (v > 0 && (data[7 + v - 1] == '\r' || data[7 + v - 1] == '\n'))
			v--;
		if (v >= sizeof(r->allow))
			v = sizeof(r->allow) - 1;
		memcpy(r->allow, data + 7, v);
		r->allow[v] = '\0';
	}
	return len;
}

static void request(uint16_t port, const char *method, const char *path, const char *type,
                    const char *body, size_t body_len, struct reply *out)
{
	memset(out, 0, sizeof(*out));
	char url[256];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", port, path);
	CURL *c = curl_easy_init();
	assert_non_null(c);
	struct curl_slist *headers = NULL;
	if (type != NULL) {
		char h[128];
		snprintf(h, sizeof(h), "Content-Type: %s", type);
		headers = curl_slist_append(headers, h);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	if (body != NULL) {
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
	}
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, out);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
	curl_slist_free_all(headers);
	curl_easy_cleanup(c);
}

static struct http_server *server;

static int setup(void **state)
{
	(void)state;
	struct http_server_options o = {
		.listen = "127.0.0.1:0",
		.routes = routes,
		.route_count = sizeof(routes) / sizeof(routes[0]),
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

static void test_routes_and_errors(void **state)
{
	(void)state;
	uint16_t port = http_server_port(server);
	assert_true(port != 0);
	struct reply r;
	request(port, "GET", "/hello?who=ann", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"hello\":\"ann\"}");
	request(port, "GET", "/hello", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 200);
	request(port, "GET", "/hello?who=ann&whom=bob", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "unexpected whom"));
	request(port, "GET", "/hello?who=ann&who=bob", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "unexpected who"));

	request(port, "POST", "/things/t1", "application/json", "{\"a\":1}", 7, &r);
	assert_int_equal(r.status, 201);
	assert_string_equal(r.body, "{\"a\":1,\"id\":\"t1\"}");

	request(port, "GET", "/nope", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 404);
	assert_non_null(strstr(r.body, "\"code\":\"not_found\""));

	request(port, "DELETE", "/hello", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 405);
	assert_string_equal(r.allow, "GET");

	request(port, "POST", "/things/t1", "text/plain", "x", 1, &r);
	assert_int_equal(r.status, 415);

	request(port, "POST", "/things/t1", "application/json", "{\"a\":", 5, &r);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "invalid_json"));

	request(port, "POST", "/things/t1", "application/json", "[1]", 3, &r);
	assert_int_equal(r.status, 400);

	request(port, "POST", "/things/t1", "application/json", "{\"a\":1,\"a\":2}", 13, &r);
	assert_int_equal(r.status, 400); /* duplicate keys refused */

	request(port, "GET", "/silent", NULL, NULL, 0, &r);
	assert_int_equal(r.status, 500);
}

static void test_oversize_body_refused(void **state)
{
	(void)state;
	size_t len = HTTP_MAX_BODY + 10;
	char *big = malloc(len);
	assert_non_null(big);
	memset(big, ' ', len);
	struct reply r;
	request(http_server_port(server), "POST", "/things/t1", "application/json", big, len, &r);
	assert_int_equal(r.status, 413);
	free(big);
}

static void *resume_later(void *arg)
{
	(void)arg;
	for (int i = 0; i < 200; i++) {
		pthread_mutex_lock(&parked_lock);
		struct http_request *req = parked;
		if (req != NULL) {
			parked = NULL;
			http_resume(req);
		}
		pthread_mutex_unlock(&parked_lock);
		if (req != NULL)
			return NULL;
		usleep(10000);
	}
	return NULL;
}

static void test_suspend_resume(void **state)
{
	(void)state;
	pthread_t t;
	assert_int_equal(pthread_create(&t, NULL, resume_later, NULL), 0);
	struct reply r;
	request(http_server_port(server), "GET", "/wait", NULL, NULL, 0, &r);
	pthread_join(t, NULL);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"state\":\"waited\"}");
}

static void test_bad_listen_addresses(void **state)
{
	(void)state;
	struct http_server *s = NULL;
	struct sp_diag d;
	const char *bad[] = {"", "127.0.0.1", "127.0.0.1:99999", "[::1]8080", "nohost:80",
	                     "127.0.0.1:x"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct http_server_options o = {.listen = bad[i], .routes = routes, .route_count = 1};
		assert_int_equal(http_server_start(&o, &s, &d), SP_ERR_INVALID);
		assert_null(s);
	}
	/* The port our server holds is in use. */
	char taken[64];
	snprintf(taken, sizeof(taken), "127.0.0.1:%u", http_server_port(server));
	struct http_server_options o = {.listen = taken, .routes = routes, .route_count = 1};
	assert_int_equal(http_server_start(&o, &s, &d), SP_ERR_IO);
	assert_non_null(strstr(d.message, taken));
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes_and_errors),
		cmocka_unit_test(test_oversize_body_refused),
		cmocka_unit_test(test_suspend_resume),
		cmocka_unit_test(test_bad_listen_addresses),
	};
	int r = cmocka_run_group_tests(tests, setup, teardown);
	curl_global_cleanup();
	return r;
}
