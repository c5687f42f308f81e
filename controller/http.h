/*
 * controller/http.h — the controller's HTTP front on libmicrohttpd.
 *
 * One server thread (MHD's internal epoll thread) reads requests, matches them against
 * the route table (controller/router.h), collects the body up to a hard limit and calls
 * the route's handler with a struct http_request. The handler fills in the response
 * (status, body, headers) with the http_reply_* helpers. A handler that must wait (a
 * long poll) calls http_suspend(); whoever ends the wait calls http_resume(), after which
 * the same handler is called again with the same request and its `state`.
 *
 * Ownership: the server allocates each struct http_request when a request arrives and
 * frees it (calling state_free on state) when MHD reports the request complete. Handlers
 * run on the server thread only, so they need no locks among themselves; http_resume is
 * the one function callable from other threads.
 */
#ifndef SALLYPORT_CONTROLLER_HTTP_H
#define SALLYPORT_CONTROLLER_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "controller/router.h"
#include "shared/buf.h"
#include "shared/error.h"

#define HTTP_MAX_BODY (1u << 20)
#define HTTP_MAX_RESPONSE_HEADERS 8

struct http_server;
struct http_request;

/* Called on the server thread. `app` is the pointer given to http_server_start. */
typedef void (*http_handler)(struct http_request *req, void *app);

struct http_header {
	char name[64];
	char value[2048]; /* room for an authorization URL in Location */
};

struct http_request {
	struct http_server *server;
	void *connection;      /* struct MHD_Connection *, opaque here */
	const char *method;
	char path[ROUTER_MAX_PATH + 1];
	struct route_match match;
	struct sp_buf body;    /* request body, at most HTTP_MAX_BODY bytes */
	char client_address[64];
	char request_id[33];
	int64_t started_ms;

	/* The response, filled by the handler. */
	unsigned status;
	struct sp_buf response;
	const char *content_type;
	struct http_header headers[HTTP_MAX_RESPONSE_HEADERS];
	size_t header_count;

	/* Handler-owned state kept across suspend/resume; freed with state_free. */
	void *state;
	void (*state_free)(void *state);
	int suspended;
	int body_too_large;
	int replied;
	int gated;

	/* Who the gate authenticated, for handlers and audit events. */
	const char *actor_type;   /* "api_key", "user", "connector"...; NULL when anonymous */
	char actor_id[64];
	char actor_label[330];   /* a name or an e-mail address */
	unsigned actor_role;      /* meaning defined by the application */
	char actor_session[33];   /* client callers: their session id */
	char actor_device[33];    /* client callers: their device id */
	char actor_network[33];   /* connector callers: their remote network id */
};

/*
 * Runs after routing and body collection, before the handler. Returns 0 to let the
 * handler run, or non-zero after replying itself (401, 403, 429...). Used for
 * authentication by route flags.
 */
typedef int (*http_gate)(struct http_request *req, void *app);

struct http_server_options {
	const char *listen;        /* "127.0.0.1:8080" or "[::1]:8080" */
	const struct route *routes;
	size_t route_count;
	void *app;
	http_gate gate;            /* NULL: every route is open */
	/* Called as each response is queued (server thread), for metrics and access logs. */
	void (*on_response)(struct http_request *req, void *app);
	const char *tls_cert_pem;  /* NULL for plain HTTP */
	const char *tls_key_pem;
	unsigned connection_limit;
	unsigned connection_timeout_s;
};

/* Binds and starts serving. On failure fills diag (address in use, bad address...). */
int http_server_start(const struct http_server_options *opts, struct http_server **out,
                      struct sp_diag *diag);
/* The port actually bound (useful with port 0). */
uint16_t http_server_port(const struct http_server *server);
/* Stops accepting, finishes in-flight requests, frees. Safe on NULL. */
void http_server_stop(struct http_server *server);

/* Request accessors (server thread only). */
const char *http_header(struct http_request *req, const char *name);
const char *http_query(struct http_request *req, const char *name);
/* The name of the first query parameter that is not in the NULL-terminated list `known`,
 * or that appears more than once; NULL when every parameter is known and single. */
const char *http_query_unexpected(struct http_request *req, const char *const *known);
const char *http_cookie(struct http_request *req, const char *name);

/* Response helpers. Each replaces any previous response body. */
void http_reply_json(struct http_request *req, unsigned status, json_t *body /* stolen */);
void http_reply_text(struct http_request *req, unsigned status, const char *content_type,
                     const char *text, size_t len);
/* {"error":{"code":code,"message":...}} */
void http_reply_error(struct http_request *req, unsigned status, const char *code,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));
int http_add_header(struct http_request *req, const char *name, const char *value);
/*
 * Parses the request body as one JSON object. On failure replies 400 (or 415 for a
 * wrong Content-Type) itself and returns NULL: the handler just returns.
 */
json_t *http_body_json_object(struct http_request *req);

/* Long polls. */
void http_suspend(struct http_request *req);
/* Any thread. The handler runs again on the server thread. */
void http_resume(struct http_request *req);

#endif
