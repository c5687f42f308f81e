/*
 * Tests for controller/feed.c behind a real HTTP server on 127.0.0.1: a long poll is
 * answered at once when behind, woken by a publish, and released by its deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "controller/feed.h"
#include "controller/http.h"

static struct feed *feed;
static struct http_server *server;

static void handle_feed(struct http_request *req, void *app)
{
	(void)app;
	const char *after_text = http_query(req, "after");
	int64_t after = after_text != NULL ? strtoll(after_text, NULL, 10) : 0;
	const char *timeout_text = http_query(req, "timeout_ms");
	unsigned timeout = timeout_text != NULL ? (unsigned)strtoul(timeout_text, NULL, 10) : 5000;
	if (req->state == NULL) {
		req->state = malloc(1); /* marks "already parked once" */
		req->state_free = free;
		if (feed_wait(feed, req, after, timeout) == 1)
			return;
	}
	http_reply_json(req, 200, json_pack("{s:I}", "seq", (json_int_t)feed_seq(feed)));
}

static const struct route routes[] = {{"GET", "/feed", (void *)handle_feed, 0}};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
	char *out = user;
	size_t len = size * n, have = strlen(out);
	if (have + len < 256) {
		memcpy(out + have, data, len);
		out[have + len] = '\0';
	}
	return len;
}

static void poll_feed(const char *query, char body[256])
{
	char url[256];
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/feed?%s", http_server_port(server), query);
	body[0] = '\0';
	CURL *c = curl_easy_init();
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_cleanup(c);
}

static int setup(void **state)
{
	(void)state;
	if (feed_new(5, 20, &feed) < 0)
		return -1;
	struct http_server_options o = {.listen = "127.0.0.1:0", .routes = routes,
	                                .route_count = 1};
	return http_server_start(&o, &server, NULL);
}

static int teardown(void **state)
{
	(void)state;
	feed_wake_all(feed);
	http_server_stop(server);
	feed_free(feed);
	return 0;
}

static void test_behind_answers_at_once(void **state)
{
	(void)state;
	char body[256];
	double t0 = now_s();
	poll_feed("after=3", body);
	assert_string_equal(body, "{\"seq\":5}");
	assert_true(now_s() - t0 < 1.0);
}

static void test_deadline_releases(void **state)
{
	(void)state;
	char body[256];
	double t0 = now_s();
	poll_feed("after=5&timeout_ms=300", body);
	double took = now_s() - t0;
	assert_string_equal(body, "{\"seq\":5}");
	assert_true(took >= 0.29);
	assert_true(took < 2.0);
	assert_int_equal(feed_waiting(feed), 0);
}

static void *publish_soon(void *arg)
{
	(void)arg;
	while (feed_waiting(feed) == 0)
		usleep(1000);
	feed_publish(feed, 6);
	return NULL;
}

static void test_publish_wakes_quickly(void **state)
{
	(void)state;
	pthread_t t;
	pthread_create(&t, NULL, publish_soon, NULL);
	char body[256];
	double t0 = now_s();
	poll_feed("after=5&timeout_ms=8000", body);
	double took = now_s() - t0;
	pthread_join(t, NULL);
	assert_string_equal(body, "{\"seq\":6}");
	assert_true(took < 1.0); /* woken by the publish, not by the 8 s deadline */
	feed_publish(feed, 4);   /* never goes backwards */
	assert_int_equal(feed_seq(feed), 6);
}

int main(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_behind_answers_at_once),
		cmocka_unit_test(test_deadline_releases),
		cmocka_unit_test(test_publish_wakes_quickly),
	};
	int r = cmocka_run_group_tests(tests, setup, teardown);
	curl_global_cleanup();
	return r;
}
