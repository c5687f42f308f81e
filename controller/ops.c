/*
 * controller/ops.c — operational endpoints: liveness, readiness, Prometheus metrics and
 * the public signing keys.
 */
#include <string.h>

#include "controller/app.h"
#include "controller/routes.h"

static void handle_healthz(struct http_request *req, void *app)
{
	(void)app;
	http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/* Ready when the store answers and a signing key is loaded. */
static void handle_readyz(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct db_stmt *st = NULL;
	int db_ok = db_prepare(c->db, "SELECT 1 FROM settings WHERE id = 1", &st) == 0 &&
		    db_step(st) == DB_ROW;
	db_finalize(st);
	int keys_ok = c->authority.signer != NULL;
	json_t *body = json_pack("{s:s, s:{s:b, s:b}}", "status", db_ok && keys_ok ? "ready" : "not_ready",
	                         "checks", "database", db_ok, "signing_keys", keys_ok);
	http_reply_json(req, db_ok && keys_ok ? 200 : 503, body);
}

static void handle_metrics(struct http_request *req, void *app)
{
	struct controller *c = app;
	struct sp_buf out;
	sp_buf_init(&out, 4 << 20);
	sp_metric_set(&c->metrics.feed_waiters, (int64_t)feed_waiting(c->feed));
	if (sp_metrics_render(&c->metrics_registry, &out) < 0) {
		sp_buf_free(&out);
		http_reply_error(req, 500, "internal", "metrics could not be rendered");
		return;
	}
	http_reply_text(req, 200, "text/plain; version=0.0.4", (const char *)out.data, out.len);
	sp_buf_free(&out);
}

static void handle_jwks(struct http_request *req, void *app)
{
	struct controller *c = app;
	size_t len = 0;
	const char *doc = authority_jwks(&c->authority, &len);
	if (doc == NULL) {
		http_reply_error(req, 503, "unavailable", "no signing key is loaded");
		return;
	}
	http_reply_text(req, 200, "application/jwk-set+json", doc, len);
	/* Verifiers may cache briefly; rotation publishes successors a day ahead. */
	http_add_header(req, "Cache-Control", "public, max-age=300");
}

const struct route ops_routes[] = {
	{"GET", "/healthz", (void *)handle_healthz, ROUTE_PUBLIC},
	{"GET", "/readyz", (void *)handle_readyz, ROUTE_PUBLIC},
	{"GET", "/metrics", (void *)handle_metrics, ROUTE_PUBLIC},
	{"GET", "/.well-known/jwks.json", (void *)handle_jwks, ROUTE_PUBLIC},
};
const size_t ops_route_count = sizeof(ops_routes) / sizeof(ops_routes[0]);
