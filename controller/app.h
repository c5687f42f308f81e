/*
 * controller/app.h — the state of one running controller, shared by its modules.
 *
 * main.c builds a struct controller from the configuration, opens the store, loads the
 * signing keys and starts the HTTP server with the route table of controller/routes.c.
 * Every HTTP handler receives it as `app`. Handlers run on the HTTP thread only, so
 * the database connection and the authority need no locks; the feed and the metrics are
 * thread-safe on their own.
 *
 * Ownership: main.c owns the struct and everything it points to, and tears it down in
 * reverse order of creation (controller_close).
 */
#ifndef SALLYPORT_CONTROLLER_APP_H
#define SALLYPORT_CONTROLLER_APP_H

#include <stdint.h>

#include "controller/db.h"

#include "controller/authority.h"
#include "controller/change_watch.h"
#include "controller/feed.h"
#include "controller/http.h"
#include "controller/relay.h"
#include "shared/metrics.h"

/* Roles of an authenticated caller (http_request.actor_role). */
enum controller_role {
	ROLE_NONE = 0,
	ROLE_AUDITOR = 1,   /* read the admin API and the audit and flow events */
	ROLE_ADMIN = 2,     /* everything */
	ROLE_CLIENT = 3,    /* a signed-in device (client API) */
	ROLE_CONNECTOR = 4, /* an enrolled connector (connector API) */
};

/* Audiences of the tokens the controller accepts on its own API (docs/protocol.md). */
#define ACCESS_TOKEN_AUDIENCE "sallyport:controller"
#define CONNECTOR_TOKEN_AUDIENCE "sallyport:controller"

/* Route flags: which callers a route admits (checked by controller_gate). */
#define ROUTE_PUBLIC 0x0u
#define ROUTE_ADMIN_READ 0x1u  /* API key of role auditor or admin, or console session */
#define ROUTE_ADMIN_WRITE 0x2u /* API key or console session of role admin */
#define ROUTE_CLIENT 0x4u      /* client access token */
#define ROUTE_CONNECTOR 0x8u   /* connector credential */

struct controller_settings {
	char public_url[512];
	char http_listen[128];
	char relay_listen[128];
	char relay_public[2048]; /* "" : relay_listen with the bound port */
	char database[4096];
	char state_dir[4096];
	char tls_cert[4096];
	char tls_key[4096];
	int plain_http;
	char oidc_issuer[512];
	char oidc_client_id[256];
	char oidc_client_secret[512];
	char oidc_groups_claim[64];
	char oidc_token_auth[32]; /* client_secret_basic or client_secret_post */
	char admin_emails[4096];
	int64_t grant_ttl_s;
	int64_t session_ttl_s;
	int64_t relay_max_connections;
	int64_t relay_max_per_client;
};

struct auth_state;

struct controller_metrics {
	struct sp_metric http_requests;
	struct sp_metric api_errors;
	struct sp_metric grants_issued;
	struct sp_metric sign_ins;
	struct sp_metric sign_in_failures;
	struct sp_metric feed_waiters;
	struct relay_metrics relay;
};

struct policy_state;

struct controller {
	struct controller_settings settings;
	struct db *db;
	struct authority authority;
	struct feed *feed;
	/* Publishes changes committed by other processes to the feed (change_watch.h). */
	struct change_watch *change_watch;
	struct http_server *http;
	struct sp_metrics_registry metrics_registry;
	struct controller_metrics metrics;
	/* Seconds since the epoch; replaceable in tests. */
	int64_t (*now)(void);
	int ready;
	/* Policy snapshot and its cache (controller/policy.h); created on first use. */
	struct policy_state *policy;
	/* Sign-in state: the IdP client, pending logins, one-time codes, console sessions
	 * (controller/auth.h). Made by auth_open, released by auth_close. */
	struct auth_state *auth;
	/* The tunnel relay on its own thread (controller/relay.h); NULL when not running. */
	struct relay *relay;
};

/* The route table of every module, assembled once (controller/routes.c). */
const struct route *controller_routes(size_t *count);

/* The HTTP gate: authenticates the caller and enforces the route's flags. */
int controller_gate(struct http_request *req, void *app);
/* Drops the gate's cache of parsed connector keys (at shutdown). */
void controller_gate_forget_keys(void);

#endif
