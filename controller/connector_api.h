/*
 * controller/connector_api.h — the API connectors call (/api/connector/v1/...):
 * enrollment with a one-time token, the signed connector config, heartbeats and flow
 * events. The change feed for connectors lives in controller/feed_api.c.
 *
 *   POST /api/connector/v1/enroll       public: the one-time token is the credential
 *   GET  /api/connector/v1/config       connector token: {"document": "<JWS>"}
 *   POST /api/connector/v1/heartbeat    connector token: {"time": now}
 *   POST /api/connector/v1/flow-events  connector token: {"accepted": n, "duplicates": m}
 *
 * Pure parts (request validation, config claims) are exported for unit tests; the
 * handlers only move data between HTTP, these functions and the store. Everything runs
 * on the HTTP thread (the database connection is used there only).
 *
 * Ownership: json_t results are new references the caller releases; strings in the
 * structs below borrow from the JSON they were validated from.
 */
#ifndef SALLYPORT_CONTROLLER_CONNECTOR_API_H
#define SALLYPORT_CONTROLLER_CONNECTOR_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "controller/db.h"

#include "controller/authority.h"
#include "shared/error.h"

/* Most flow events one POST may carry. */
#define CONNECTOR_FLOW_BATCH_MAX 1000
/* Lifetime of a signed connector config (docs/protocol.md §1). */
#define CONNECTOR_CONFIG_TTL_S 600
#define CONNECTOR_CONFIG_AUDIENCE_PREFIX "sallyport:connector:"
/* Most entries of a config's revocations.access (docs/protocol.md §1.6). */
#define CONNECTOR_ACCESS_MAX 10000

/*
 * Fills the empty array `into` with the unexpired "access ended" revocations (access_revocations rows, at
 * expires_at > now) of the resources of network_id, as {"user","resource","at"}, sorted by
 * user then resource. Bounded by `cap` entries: past it, one entry per user with resource
 * "*" and the user's latest time; past it again, the single entry {"*","*"} with the
 * latest time of all (every grant issued until then is refused; clients fetch new ones).
 * Over-revoking is safe, leaving a pair out is not. 0, SP_ERR_DATABASE or SP_ERR_NOMEM.
 */
int connector_access_revocations(struct db *db, const char *network_id, int64_t now, size_t cap,
                                 json_t *into);

/* A validated enrollment request; strings borrow from the request JSON. */
struct connector_enroll_request {
	const char *token;
	const char *name;
	const char *public_key_pem;
	const char *direct_address; /* NULL when absent or null */
	const char *version;        /* NULL when absent */
};

/*
 * Checks the shape of an enrollment body: token (string), name (1..128), public_key_pem
 * (string up to 16384 bytes; parsed later), direct_address (null or "host:port", at most
 * 300 bytes), version (1..64 printable characters), and no other member.
 * SP_ERR_INVALID with diag naming the field.
 */
int connector_enroll_validate(const json_t *body, struct connector_enroll_request *out,
                              struct sp_diag *diag);

/*
 * Checks "host:port" / "[v6]:port" as a connector's direct address: a non-empty host of
 * letters, digits, '.', '-', ':' (inside brackets) and a port 1..65535. 0 or SP_ERR_INVALID.
 */
int connector_check_direct_address(const char *text);

/* One flow event as the schema stores it (flow_events); strings borrow from the JSON. */
struct connector_flow_event {
	const char *flow_id;
	int64_t time;
	const char *user_id, *device_id, *session_id, *resource_id; /* NULL when absent */
	const char *protocol;                                       /* tcp, udp, icmp */
	const char *destination_host, *destination_ip;              /* NULL when absent */
	int64_t destination_port;                                   /* -1 when absent */
	const char *decision;                                       /* allow, deny */
	const char *reason;                                         /* NULL when absent */
	int64_t bytes_up, bytes_down, duration_ms;
};

/*
 * Validates a flow-event batch body {"events": [ ... ]} (1..CONNECTOR_FLOW_BATCH_MAX
 * events) and fills out[0..*count). out must hold CONNECTOR_FLOW_BATCH_MAX entries.
 * Each event follows the flow_events table: flow_id (1..64), time (integer >= 0),
 * protocol (tcp|udp|icmp), decision (allow|deny), reason (lower-case code, required for
 * deny), user_id / device_id / session_id / resource_id (1..64 or null),
 * destination_host (1..255), destination_ip (an IPv4 or IPv6 literal),
 * destination_port (0..65535), bytes_up / bytes_down / duration_ms (integers >= 0,
 * default 0). Unknown members are refused. SP_ERR_INVALID (or SP_ERR_TOO_LARGE for a
 * batch over the limit) with a diag naming the index and the field: "events[3].port ...".
 */
int connector_flow_events_validate(const json_t *body, struct connector_flow_event *out,
                                   size_t *count, struct sp_diag *diag);

/*
 * The claims of a connector's signed config at time `now` (docs/protocol.md §1.6):
 * v, typ, iss, aud, iat, exp, network_id, resources of its network, revocations and seq.
 * Reads the database; SP_ERR_DATABASE when it cannot.
 */
int connector_config_claims(struct db *db, const char *issuer, const char *connector_id,
			    const char *network_id, int64_t now, int64_t seq, json_t **out);

/* The claims above signed with the active key; *out freed by the caller with free(). */
int connector_config_document(struct db *db, struct authority *authority, const char *issuer,
			      const char *connector_id, const char *network_id, int64_t now,
			      int64_t seq, char **out);

#endif
