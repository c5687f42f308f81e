/*
 * controller/relay.h — the tunnel relay (DESIGN.md §1 "Relay", §2 step 8, §3;
 * docs/protocol.md §3): pairs a client's TCP connection with a data connection from the
 * connector its ticket names, then splices the two sockets without looking at the bytes.
 *
 * The relay runs on its own thread with its own libevent loop. It verifies relay tickets
 * and relay-connector tokens with a copy of the controller's published JWKS: the HTTP
 * thread hands it a new document through relay_sync_keys (a mutex-protected swap), so the
 * relay never touches the authority or the database.
 *
 * Ownership: main.c owns the struct relay (relay_start, relay_stop before the HTTP server
 * stops, relay_free after). The metrics live in
 * struct relay_metrics, owned by the caller (inside struct controller) so that they stay
 * valid for /metrics after the relay stops.
 */
#ifndef SALLYPORT_CONTROLLER_RELAY_H
#define SALLYPORT_CONTROLLER_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include "shared/error.h"
#include "shared/jwk.h"
#include "shared/metrics.h"
#include "shared/wire.h"

#define RELAY_TICKET_TYP "relay-ticket"
#define RELAY_CONNECTOR_TYP "relay-connector"
#define RELAY_AUDIENCE "sallyport:relay"
#define RELAY_TICKET_TTL_S 60
#define RELAY_CONNECTOR_TOKEN_TTL_S 600
/* Clock skew allowed on iat. */
#define RELAY_SKEW_S 60

struct relay_metrics {
	struct sp_metric paired;         /* client and connector paired */
	struct sp_metric active;         /* relayed connections open now */
	struct sp_metric bytes_up;       /* client -> connector */
	struct sp_metric bytes_down;     /* connector -> client */
	struct sp_metric connectors;     /* registered control connections */
	struct sp_metric refused[SP_RELAY_OVERLOADED + 1]; /* by status; [0] unused */
};

/* Fills in names and registers every relay metric (registry may be NULL: not registered). */
void relay_metrics_register(struct relay_metrics *m, struct sp_metrics_registry *registry);

struct relay_options {
	const char *listen;              /* "host:port" */
	const char *jwks_document;       /* the controller's JWKS at start */
	size_t jwks_length;
	size_t max_connections;          /* relayed (and pairing) client connections; 0: 4096 */
	size_t max_per_client;           /* the same per client IP address; 0: 64 */
	size_t max_pending;              /* pairings waiting for a data connection; 0: 1024 */
	size_t max_connectors;           /* registered control connections; 0: 65536 */
	size_t max_replay;               /* remembered ticket ids; 0: 65536 */
	size_t max_unidentified;         /* connections before their preamble; 0: 1024 */
	int64_t pairing_timeout_ms;      /* 0: 5000 */
	int64_t preamble_timeout_ms;     /* 0: 10000 */
	struct relay_metrics *metrics;   /* may be NULL */
	int64_t (*now)(void);            /* unix seconds; NULL: time(NULL) */
};

struct relay;

/* Binds, starts the thread. SP_ERR_IO (diag names the address) when it cannot listen. */
int relay_start(const struct relay_options *o, struct relay **out, struct sp_diag *diag);
/* The port it listens on (useful with port 0). */
uint16_t relay_port(const struct relay *r);
/* Replaces the key set with a JWKS document (any thread). SP_ERR_INVALID when it does not
 * parse (the old set stays). */
int relay_set_keys(struct relay *r, const char *jwks_document, size_t length);
/* For the one thread that owns the authority: hands the document over when it differs
 * from the last one handed over. Safe on a NULL relay. */
void relay_sync_keys(struct relay *r, const char *jwks_document, size_t length);
/* Stops the thread and closes every connection; relay_sync_keys stays safe to call (the
 * HTTP thread may still be running). Safe on NULL. */
void relay_stop(struct relay *r);
/* Stops if needed and frees. Safe on NULL. */
void relay_free(struct relay *r);

/* ---- pure checks (unit-tested) ---- */

struct relay_token {
	uint8_t cid[32];     /* SHA-256 of the connector id */
	char jti[65];        /* tickets only */
	int64_t exp;
};

/*
 * Verifies a relay ticket (typ RELAY_TICKET_TYP, jti required) or a relay-connector token
 * (typ RELAY_CONNECTOR_TYP) against keys at time now. Returns the relay status the peer
 * gets: SP_RELAY_PAIRED (0) when valid, SP_RELAY_BAD_TICKET or SP_RELAY_EXPIRED.
 */
int relay_check_token(const struct sp_jwks *keys, const char *typ, const uint8_t *jws,
                      size_t len, int64_t now, struct relay_token *out);

/* base64url(SHA-256(connector id)), the `cid` claim. */
int relay_connector_cid(const char *connector_id, char out[SP_JWK_THUMBPRINT_LEN + 1]);

#endif
