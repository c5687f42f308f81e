/*
 * controller/feed_api.h — the change feeds connectors and clients long-poll
 * (docs/protocol.md §4):
 *
 *   GET /api/connector/v1/feed?after=SEQ[&timeout=S]   connector token
 *   GET /api/client/v1/feed?after=SEQ[&timeout=S]      client access token
 *
 * Both answer {"v":1,"seq":<latest>,"changes":[kinds]} at once when a change after SEQ
 * concerns the caller, otherwise they park the request (controller/feed.h) for up to
 * `timeout` seconds (default 25, at most 60). A change that does not concern the caller
 * wakes the parked request only on the server: the handler re-reads the changes, finds
 * none for it, and parks it again for the time that remains, so the caller sees nothing.
 *
 * Which change concerns whom is decided by the pure functions below from the rows of the
 * `changes` table (kind, op, entity_id, detail), so it is unit-tested without HTTP. All
 * of this runs on the HTTP thread.
 */
#ifndef SALLYPORT_CONTROLLER_FEED_API_H
#define SALLYPORT_CONTROLLER_FEED_API_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include "controller/db.h"

#include "shared/error.h"

/* Kinds of document a feed answer names; the receiver refetches each one named. */
#define FEED_KIND_CONFIG 0x1u    /* connector: GET /api/connector/v1/config */
#define FEED_KIND_RESOURCES 0x2u /* client: its signed resource list */
#define FEED_KIND_SESSION 0x4u   /* client: its session, device or user was revoked */

#define FEED_DEFAULT_TIMEOUT_S 25
#define FEED_MAX_TIMEOUT_S 60
/* Past this many changes in one answer, every kind is named instead of sorting them. */
#define FEED_SCAN_MAX 10000

/* One row of the changes table; detail may be NULL. Borrowed. */
struct feed_change {
	const char *kind;
	const char *op;
	const char *entity_id;
	const json_t *detail;
};

/* What a client is, and what it can reach now (loaded by feed_client_view_load). */
struct feed_client_view {
	char user_id[33], session_id[33], device_id[33];
	json_t *groups;    /* object used as a set: group id -> true */
	json_t *resources; /* resource ids reachable through its groups' policies */
	json_t *networks;  /* networks of those resources */
};

/* The kinds (FEED_KIND_*) a change means for a connector of `network_id` / `connector_id`. */
unsigned feed_change_for_connector(const struct feed_change *change, const char *connector_id,
                                   const char *network_id);
/* The kinds a change means for the client described by view. */
unsigned feed_change_for_client(const struct feed_change *change,
                                const struct feed_client_view *view);

int feed_client_view_load(struct db *db, const char *user_id, const char *session_id,
			  const char *device_id, struct feed_client_view *out);
void feed_client_view_free(struct feed_client_view *view);

/*
 * The kinds that the changes with after < seq <= upto mean for a connector (view NULL,
 * connector ids set) or a client (view set). Every kind the caller may receive is named
 * when more than FEED_SCAN_MAX changes are pending. SP_ERR_DATABASE on failure.
 */
int feed_pending_kinds(struct db *db, int64_t after, int64_t upto, const char *connector_id,
		       const char *network_id, const struct feed_client_view *view,
		       unsigned *kinds);

/* The feed answer {"v":1,"seq":seq,"changes":[...]} for a set of kinds. */
json_t *feed_answer(int64_t seq, unsigned kinds);

/*
 * Feed requests not yet completed: held, or answered but not yet sent. On shutdown the
 * controller wakes every held poll (they answer at once while it is not ready) and waits
 * for this to reach 0 before stopping the server, so held polls get an answer rather
 * than a closed connection. Any thread.
 */
size_t feed_api_open_polls(void);

#endif
