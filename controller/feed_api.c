/* controller/feed_api.c — see feed_api.h. */
#include "controller/feed_api.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "controller/app.h"
#include "controller/routes.h"
#include "controller/store.h"
#include "shared/clock.h"

static int is(const char *a, const char *b)
{
	return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* The string member `name` of a change's detail, or NULL. */
static const char *detail(const struct feed_change *change, const char *name)
{
	return json_string_value(json_object_get(change->detail, name));
}

static int in_set(const json_t *set, const char *id)
{
	return id != NULL && json_object_get(set, id) != NULL;
}

unsigned feed_change_for_connector(const struct feed_change *ch, const char *connector_id,
                                   const char *network_id)
{
	const char *kind = ch->kind;
	if (is(kind, "resource"))
		return is(detail(ch, "network_id"), network_id) ||
		                       is(detail(ch, "previous_network_id"), network_id)
		               ? FEED_KIND_CONFIG
		               : 0;
	/* A new session, device or user is never in a revocation set, and sign-ins are the
	 * most frequent change of all: they do not wake every connector. */
	if (is(kind, "session") || is(kind, "device") || is(kind, "user"))
		return is(ch->op, "insert") ? 0 : FEED_KIND_CONFIG;
	if (is(kind, "membership") || is(kind, "policy") || is(kind, "signing_key"))
		return FEED_KIND_CONFIG;
	/* Its own row (disabled, revoked, moved): the next poll learns the verdict. */
	if (is(kind, "connector"))
		return is(ch->entity_id, connector_id) ? FEED_KIND_CONFIG : 0;
	return 0;
}

unsigned feed_change_for_client(const struct feed_change *ch, const struct feed_client_view *v)
{
	const char *kind = ch->kind;
	int removed_or_changed = !is(ch->op, "insert");
	if (is(kind, "session"))
		return removed_or_changed && is(ch->entity_id, v->session_id) ? FEED_KIND_SESSION : 0;
	if (is(kind, "device"))
		return removed_or_changed && is(ch->entity_id, v->device_id) ? FEED_KIND_SESSION : 0;
	if (is(kind, "user"))
		return removed_or_changed && is(ch->entity_id, v->user_id) ? FEED_KIND_SESSION : 0;
	if (is(kind, "service_account_key"))
		return removed_or_changed && is(detail(ch, "service_account_id"), v->user_id)
		               ? FEED_KIND_SESSION
		               : 0;
	/* Memberships name their user even after deletion (cascades included), and a deleted
	 * group or resource takes its memberships or policies with it, so those rows cover
	 * deletions; the view (current state) covers the rest. */
	if (is(kind, "membership"))
		return is(detail(ch, "user_id"), v->user_id) ||
		                       is(detail(ch, "previous_user_id"), v->user_id)
		               ? FEED_KIND_RESOURCES
		               : 0;
	if (is(kind, "group"))
		return in_set(v->groups, ch->entity_id) ? FEED_KIND_RESOURCES : 0;
	if (is(kind, "policy"))
		return in_set(v->groups, detail(ch, "group_id")) ||
		                       in_set(v->groups, detail(ch, "previous_group_id"))
		               ? FEED_KIND_RESOURCES
		               : 0;
	if (is(kind, "resource"))
		return in_set(v->resources, ch->entity_id) ? FEED_KIND_RESOURCES : 0;
	if (is(kind, "connector"))
		return in_set(v->networks, detail(ch, "network_id")) ||
		                       in_set(v->networks, detail(ch, "previous_network_id"))
		               ? FEED_KIND_RESOURCES
		               : 0;
	if (is(kind, "remote_network"))
		return in_set(v->networks, ch->entity_id) ? FEED_KIND_RESOURCES : 0;
	return 0;
}

void feed_client_view_free(struct feed_client_view *view)
{
	if (view == NULL)
		return;
	json_decref(view->groups);
	json_decref(view->resources);
	json_decref(view->networks);
	view->groups = view->resources = view->networks = NULL;
}

int feed_client_view_load(struct db *db, const char *user_id, const char *session_id,
			  const char *device_id, struct feed_client_view *out)
{
	memset(out, 0, sizeof(*out));
	snprintf(out->user_id, sizeof(out->user_id), "%s", user_id);
	snprintf(out->session_id, sizeof(out->session_id), "%s", session_id);
	snprintf(out->device_id, sizeof(out->device_id), "%s", device_id);
	out->groups = json_object();
	out->resources = json_object();
	out->networks = json_object();
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE, s;
	if (out->groups == NULL || out->resources == NULL || out->networks == NULL) {
		r = SP_ERR_NOMEM;
		goto out;
	}
	if (db_prepare(db, "SELECT group_id FROM memberships WHERE user_id = ?", &st) != 0)
		goto out;
	db_bind_text(st, 1, user_id, -1, DB_STATIC);
	while ((s = db_step(st)) == DB_ROW)
		if (json_object_set_new(out->groups, (const char *)db_column_text(st, 0),
					json_true()) < 0)
			goto out;
	if (s != DB_DONE)
		goto out;
	db_finalize(st);
	st = NULL;
	if (db_prepare(db,
		       "SELECT DISTINCT r.id, r.network_id FROM memberships m"
		       " JOIN policies p ON p.group_id = m.group_id"
		       " JOIN resources r ON r.id = p.resource_id WHERE m.user_id = ?",
		       &st) != 0)
		goto out;
	db_bind_text(st, 1, user_id, -1, DB_STATIC);
	while ((s = db_step(st)) == DB_ROW)
		if (json_object_set_new(out->resources, (const char *)db_column_text(st, 0),
					json_true()) < 0 ||
		    json_object_set_new(out->networks, (const char *)db_column_text(st, 1),
					json_true()) < 0)
			goto out;
	if (s != DB_DONE)
		goto out;
	r = 0;
out:
	db_finalize(st);
	if (r < 0)
		feed_client_view_free(out);
	return r;
}

int feed_pending_kinds(struct db *db, int64_t after, int64_t upto, const char *connector_id,
		       const char *network_id, const struct feed_client_view *view, unsigned *kinds)
{
	unsigned all = view != NULL ? FEED_KIND_RESOURCES | FEED_KIND_SESSION : FEED_KIND_CONFIG;
	*kinds = 0;
	if (upto <= after)
		return 0;
	if (upto - after > FEED_SCAN_MAX) {
		*kinds = all;
		return 0;
	}
	struct db_stmt *st = NULL;
	int r = SP_ERR_DATABASE, s;
	if (db_prepare(db,
		       "SELECT kind, op, entity_id, detail FROM changes"
		       " WHERE seq > ? AND seq <= ? ORDER BY seq",
		       &st) != 0)
		goto out;
	db_bind_int64(st, 1, after);
	db_bind_int64(st, 2, upto);
	while (*kinds != all && (s = db_step(st)) == DB_ROW) {
		const char *text = (const char *)db_column_text(st, 3);
		json_t *d =
		    text != NULL ? json_loadb(text, (size_t)db_column_bytes(st, 3), 0, NULL) : NULL;
		struct feed_change ch = {.kind = (const char *)db_column_text(st, 0),
					 .op = (const char *)db_column_text(st, 1),
					 .entity_id = (const char *)db_column_text(st, 2),
					 .detail = d};
		*kinds |= view != NULL ? feed_change_for_client(&ch, view)
		                       : feed_change_for_connector(&ch, connector_id, network_id);
		json_decref(d);
	}
	if (*kinds != all && s != DB_DONE)
		goto out;
	r = 0;
out:
	db_finalize(st);
	return r;
}

json_t *feed_answer(int64_t seq, unsigned kinds)
{
	json_t *list = json_array();
	if (list == NULL)
		return NULL;
	if (((kinds & FEED_KIND_CONFIG) && json_array_append_new(list, json_string("config")) < 0) ||
	    ((kinds & FEED_KIND_RESOURCES) &&
	     json_array_append_new(list, json_string("resources")) < 0) ||
	    ((kinds & FEED_KIND_SESSION) && json_array_append_new(list, json_string("session")) < 0)) {
		json_decref(list);
		return NULL;
	}
	return json_pack("{s:i, s:I, s:o}", "v", 1, "seq", (json_int_t)seq, "changes", list);
}

/* ---- handlers ---- */

/* Kept in req->state across parks: what the caller has seen and when its poll ends. */
struct feed_poll {
	int64_t after;
	int64_t deadline_ms;
};

/* Polls whose state exists: from the first park until the server has sent the answer and
 * completed the request (state_free runs then, on the server thread). */
static atomic_size_t open_polls;

static void poll_free(void *state)
{
	free(state);
	atomic_fetch_sub(&open_polls, 1);
}

size_t feed_api_open_polls(void)
{
	return atomic_load(&open_polls);
}

/* A decimal query parameter in 0..max; absent gives dflt. -1 when malformed. */
static int query_integer(struct http_request *req, const char *name, int64_t max, int64_t dflt,
                         int64_t *out)
{
	const char *text = http_query(req, name);
	*out = dflt;
	if (text == NULL)
		return 0;
	size_t len = strlen(text);
	if (len == 0 || len > 18)
		return -1;
	int64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (text[i] < '0' || text[i] > '9')
			return -1;
		v = v * 10 + (text[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/*
 * The client's view, with its groups and reachable resources loaded only when a pending
 * change needs them: sign-ins of other people (session, device and user rows) are the most
 * frequent changes and are decided on ids alone, without the two queries per held poll.
 */
static int client_view(struct db *db, struct http_request *req, int64_t after, int64_t upto,
		       struct feed_client_view *view)
{
	struct db_stmt *st = NULL;
	int need = 1;
	if (db_prepare(db,
		       "SELECT 1 FROM changes WHERE seq > ? AND seq <= ? AND kind IN"
		       " ('group', 'policy', 'resource', 'connector', 'remote_network')"
		       " LIMIT 1",
		       &st) == 0) {
		db_bind_int64(st, 1, after);
		db_bind_int64(st, 2, upto);
		need = db_step(st) != DB_DONE;
	}
	db_finalize(st);
	if (need)
		return feed_client_view_load(db, req->actor_id, req->actor_session, req->actor_device,
		                             view);
	memset(view, 0, sizeof(*view));
	snprintf(view->user_id, sizeof(view->user_id), "%.32s", req->actor_id);
	snprintf(view->session_id, sizeof(view->session_id), "%s", req->actor_session);
	snprintf(view->device_id, sizeof(view->device_id), "%s", req->actor_device);
	return 0;
}

static void reply_feed(struct http_request *req, int64_t seq, unsigned kinds)
{
	http_reply_json(req, 200, feed_answer(seq, kinds));
}

static void handle_feed(struct http_request *req, struct controller *c, int for_client)
{
	unsigned all = for_client ? FEED_KIND_RESOURCES | FEED_KIND_SESSION : FEED_KIND_CONFIG;
	struct feed_poll *poll = req->state;
	if (poll == NULL) {
		int64_t after = 0, timeout_s = 0;
		if (query_integer(req, "after", INT64_MAX / 2, -1, &after) < 0) {
			http_reply_error(req, 400, "invalid_request",
			                 "after must be the decimal seq of the last feed answer");
			return;
		}
		if (query_integer(req, "timeout", FEED_MAX_TIMEOUT_S, FEED_DEFAULT_TIMEOUT_S,
		                  &timeout_s) < 0) {
			http_reply_error(req, 400, "invalid_request",
			                 "timeout must be a number of seconds from 0 to %d",
			                 FEED_MAX_TIMEOUT_S);
			return;
		}
		/* Without `after` the caller knows nothing yet: it fetches every document. */
		if (after < 0) {
			reply_feed(req, store_latest_change(c), all);
			return;
		}
		poll = calloc(1, sizeof(*poll));
		if (poll == NULL) {
			http_reply_error(req, 503, "unavailable", "out of memory");
			return;
		}
		poll->after = after;
		poll->deadline_ms = sp_monotonic_ms() + timeout_s * 1000;
		req->state = poll;
		req->state_free = poll_free;
		atomic_fetch_add(&open_polls, 1);
	}
	/* A few rounds at most: feed_wait answers "not parked" only when a newer change was
	 * published meanwhile, which the next round reads. */
	for (int round = 0; round < 4; round++) {
		int64_t latest = store_latest_change(c);
		if (poll->after > latest) {
			/* The caller saw a sequence this store never reached (a restored database):
			 * everything it holds may be stale. */
			reply_feed(req, latest, all);
			return;
		}
		if (latest > poll->after) {
			unsigned kinds = 0;
			struct feed_client_view view;
			int r = 0;
			if (for_client)
				r = client_view(c->db, req, poll->after, latest, &view);
			if (r == 0)
				r = feed_pending_kinds(c->db, poll->after, latest, req->actor_id,
				                       req->actor_network, for_client ? &view : NULL, &kinds);
			if (for_client)
				feed_client_view_free(&view);
			if (r < 0) {
				http_reply_error(req, 503, "unavailable", "the change feed cannot be read now");
				return;
			}
			if (kinds != 0) {
				reply_feed(req, latest, kinds);
				return;
			}
			poll->after = latest; /* nothing for this caller up to here */
		}
		int64_t left = poll->deadline_ms - sp_monotonic_ms();
		if (left <= 0 || !c->ready) {
			reply_feed(req, poll->after, 0);
			return;
		}
		int r = feed_wait(c->feed, req, poll->after, (unsigned)left);
		if (r == 1)
			return;
		if (r < 0) {
			http_reply_error(req, 503, "overloaded", "too many long polls are waiting; retry");
			return;
		}
	}
	reply_feed(req, poll->after, 0);
}

static void handle_connector_feed(struct http_request *req, void *app)
{
	handle_feed(req, app, 0);
}

static void handle_client_feed(struct http_request *req, void *app)
{
	handle_feed(req, app, 1);
}

const struct route feed_api_routes[] = {
	{"GET", "/api/connector/v1/feed", (void *)handle_connector_feed, ROUTE_CONNECTOR},
	{"GET", "/api/client/v1/feed", (void *)handle_client_feed, ROUTE_CLIENT},
};
const size_t feed_api_route_count = sizeof(feed_api_routes) / sizeof(feed_api_routes[0]);
