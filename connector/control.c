/*
 * connector/control.c — see control.h.
 */
#include "connector/control.h"

#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "connector/http_client.h"
#include "shared/log.h"
#include "shared/token.h"
#include "shared/clock.h"

#define CONNECTOR_TOKEN_LIFETIME_S 240
#define FEED_HOLD_S 25
#define BACKOFF_MIN_S 1
#define BACKOFF_MAX_S 60
/* Queued flow events are retried at least this often while the controller is away, so
 * they reach it within seconds of its return (they live only in memory until then). */
#define FLOW_EVENTS_RETRY_MAX_MS 3000
/* Refetch the config this long before it expires, even without a feed change. */
#define CONFIG_REFRESH_MARGIN_S 300

/*
 * Flow events are posted at most this often unless a batch is full: at thousands of flows
 * a second, one POST per handful of events cost the connector (and the controller on the
 * same host) more CPU than the flows themselves. Events wait at most this long extra.
 */
#define FLOW_EVENTS_MIN_INTERVAL_MS 200

static int64_t wall_now(void)
{
	return (int64_t)time(NULL);
}

int connector_shared_init(struct connector_shared *s)
{
	memset(s, 0, sizeof(*s));
	atomic_init(&s->stop, 0);
	atomic_init(&s->config_seq, -1);
	atomic_init(&s->config_iat, 0);
	pthread_mutex_init(&s->lock, NULL);
	return connector_flow_queue_init(&s->flows);
}

void connector_shared_destroy(struct connector_shared *s)
{
	if (s->relay_token != NULL) {
		OPENSSL_cleanse(s->relay_token, strlen(s->relay_token));
		free(s->relay_token);
		s->relay_token = NULL;
	}
	connector_config_free(s->pending);
	s->pending = NULL;
	pthread_mutex_destroy(&s->lock);
	connector_flow_queue_destroy(&s->flows);
}

struct connector_config *connector_shared_take_config(struct connector_shared *s)
{
	pthread_mutex_lock(&s->lock);
	struct connector_config *cfg = s->pending;
	s->pending = NULL;
	pthread_mutex_unlock(&s->lock);
	return cfg;
}

int connector_shared_relay_get(struct connector_shared *s, char **token,
                               struct connector_relay_addr relays[CONNECTOR_RELAY_MAX],
                               size_t *count)
{
	int r = 0;
	pthread_mutex_lock(&s->lock);
	*token = s->relay_token != NULL ? strdup(s->relay_token) : NULL;
	if (s->relay_token != NULL && *token == NULL)
		r = SP_ERR_NOMEM;
	*count = s->relay_count;
	memcpy(relays, s->relays, sizeof(s->relays[0]) * s->relay_count);
	pthread_mutex_unlock(&s->lock);
	return r;
}

void connector_shared_relay_token_refused(struct connector_shared *s)
{
	pthread_mutex_lock(&s->lock);
	s->relay_token_stale = 1;
	pthread_mutex_unlock(&s->lock);
}

int connector_shared_ready(struct connector_shared *s, int64_t now)
{
	return atomic_load(&s->has_config) &&
	       now - atomic_load(&s->last_controller_ok) <= CONNECTOR_CONTROLLER_FRESH_S;
}

int connector_token_make(EVP_PKEY *key, const char *connector_id, int64_t now, char **out)
{
	json_t *claims = json_pack("{s:s, s:s, s:I, s:I}", "iss", connector_id, "aud",
				   "sallyport:controller", "iat", (json_int_t)now, "exp",
				   (json_int_t)(now + CONNECTOR_TOKEN_LIFETIME_S));
	if (claims == NULL)
		return SP_ERR_NOMEM;
	int r = sp_token_sign_es256(key, connector_id, claims, out);
	json_decref(claims);
	return r;
}

/* Sleeps seconds in small slices so stop is seen within 100 ms. */
static void sleep_interruptible(struct connector_shared *s, double seconds)
{
	while (seconds > 0 && !atomic_load(&s->stop)) {
		double slice = seconds < 0.1 ? seconds : 0.1;
		usleep((useconds_t)(slice * 1e6));
		seconds -= slice;
	}
}

/* Full jitter over [backoff/2, backoff] in ms, then doubles the backoff up to the maximum. */
static int64_t backoff_delay_ms(int *backoff)
{
	uint32_t rnd = 0;
	RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
	double wait = *backoff / 2.0 + (*backoff / 2.0) * ((double)rnd / (double)UINT32_MAX);
	*backoff = *backoff * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : *backoff * 2;
	return (int64_t)(wait * 1000.0);
}

/* Full jitter over [backoff/2, backoff], then doubles the backoff up to the maximum. */
static void backoff_wait(struct connector_shared *s, int *backoff)
{
	uint32_t rnd = 0;
	RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
	double wait = *backoff / 2.0 + (*backoff / 2.0) * ((double)rnd / (double)UINT32_MAX);
	sleep_interruptible(s, wait);
	*backoff = *backoff * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : *backoff * 2;
}

/* One authenticated call. */
static int call_stoppable(struct connector_shared *s, const atomic_int *stop, const char *method,
			  const char *path, const char *body, long timeout_s, size_t max_body,
			  struct connector_http_response *resp, struct sp_diag *diag)
{
	char *token = NULL;
	int r = connector_token_make(s->identity->key, s->identity->connector_id, wall_now(), &token);
	if (r < 0)
		return sp_diag_set(diag, r, "cannot sign a connector token");
	r = connector_http(s->controller_url, method, path, body, token, timeout_s, max_body, stop,
			   resp, diag);
	free(token);
	return r;
}

static int call(struct connector_shared *s, const char *method, const char *path,
		const char *body, long timeout_s, size_t max_body, struct connector_http_response *resp,
		struct sp_diag *diag)
{
	return call_stoppable(s, &s->stop, method, path, body, timeout_s, max_body, resp, diag);
}

static void log_failure(const char *what, const char *detail)
{
	SP_LOG(SP_LOG_WARN, what, SP_LOG_STR("detail", detail));
}

static int fetch_jwks(struct connector_shared *s, struct sp_jwks *keys)
{
	struct connector_http_response resp;
	struct sp_diag d = {{0}};
	int r = connector_http(s->controller_url, "GET", "/.well-known/jwks.json", NULL, NULL, 30,
			       SP_JWKS_DOC_MAX, &s->stop, &resp, &d);
	if (r < 0) {
		log_failure("cannot fetch the controller keys", d.message);
		return r;
	}
	struct sp_jwks fresh;
	sp_jwks_init(&fresh);
	r = resp.status == 200 ? sp_jwks_parse(resp.body, resp.body_len, &fresh, &d) : SP_ERR_IO;
	connector_http_response_free(&resp);
	if (r < 0) {
		log_failure("controller keys refused", d.message);
		sp_jwks_free(&fresh);
		return r;
	}
	sp_jwks_free(keys);
	*keys = fresh;
	SP_LOG(SP_LOG_DEBUG, "controller keys refreshed", SP_LOG_UINT("keys", fresh.count));
	return 0;
}

/* GET the config, verify it, hand it over. */
static int fetch_config(struct connector_shared *s, struct sp_jwks *keys)
{
	struct connector_http_response resp;
	struct sp_diag d = {{0}};
	json_t *body = NULL, *claims = NULL;
	int r = call(s, "GET", "/api/connector/v1/config", NULL, 30, SP_TOKEN_DOCUMENT_MAX_LEN + 4096,
		     &resp, &d);
	if (r < 0) {
		log_failure("cannot fetch the connector config", d.message);
		return r;
	}
	if (resp.status != 200) {
		SP_LOG(SP_LOG_ERROR, "the controller refused our config request",
		       SP_LOG_INT("status", resp.status), SP_LOG_STR("answer", resp.body));
		connector_http_response_free(&resp);
		return SP_ERR_PERMISSION;
	}
	body = json_loads(resp.body, 0, NULL);
	connector_http_response_free(&resp);
	const char *doc = json_string_value(json_object_get(body, "document"));
	if (doc == NULL) {
		log_failure("config answer without a document", "");
		r = SP_ERR_INVALID;
		goto out;
	}
	r = sp_token_verify_max(doc, strlen(doc), SP_TOKEN_DOCUMENT_MAX_LEN, keys, "ES256", &claims,
				&d);
	if (r == SP_ERR_NOT_FOUND && fetch_jwks(s, keys) == 0)
		r = sp_token_verify_max(doc, strlen(doc), SP_TOKEN_DOCUMENT_MAX_LEN, keys, "ES256",
					&claims, &d);
	if (r < 0) {
		SP_LOG(SP_LOG_ERROR, "config document refused", SP_LOG_STR("detail", d.message));
		goto out;
	}
	struct connector_config *cfg = NULL;
	r = connector_config_from_claims(claims, s->identity->connector_id,
					 s->identity->network_id, keys, wall_now(), &cfg, &d);
	if (r < 0) {
		SP_LOG(SP_LOG_ERROR, "config document refused", SP_LOG_STR("detail", d.message));
		goto out;
	}
	if (connector_config_is_older(atomic_load(&s->config_seq), atomic_load(&s->config_iat),
				      cfg)) {
		char why[160];
		snprintf(why, sizeof(why),
			 "config: older than the one in use (seq %lld < %lld, iat %lld <= %lld)",
			 (long long)cfg->seq, (long long)atomic_load(&s->config_seq),
			 (long long)cfg->issued_at, (long long)atomic_load(&s->config_iat));
		SP_LOG(SP_LOG_ERROR, "config document refused", SP_LOG_STR("detail", why));
		connector_config_free(cfg);
		r = SP_ERR_INVALID;
		goto out;
	}
	atomic_store(&s->config_seq, cfg->seq);
	atomic_store(&s->config_iat, cfg->issued_at);
	atomic_fetch_add(&s->config_fetches, 1);
	SP_LOG(SP_LOG_INFO, "config received", SP_LOG_INT("seq", cfg->seq),
	       SP_LOG_UINT("resources", cfg->resource_count),
	       SP_LOG_UINT("revoked_sessions", cfg->revoked_sessions.count));
	pthread_mutex_lock(&s->lock);
	connector_config_free(s->pending);
	s->pending = cfg;
	pthread_mutex_unlock(&s->lock);
	if (s->config_event != NULL)
		event_active(s->config_event, EV_READ, 0);
	atomic_store(&s->last_controller_ok, wall_now());
	r = 0;
out:
	json_decref(claims);
	json_decref(body);
	return r;
}

/* One long poll: sets *config_changed; advances *seq. */
static int poll_feed(struct connector_shared *s, int64_t *seq, int *config_changed)
{
	*config_changed = 0;
	char path[128];
	snprintf(path, sizeof(path), "/api/connector/v1/feed?after=%" PRId64 "&timeout=%d", *seq,
		 FEED_HOLD_S);
	struct connector_http_response resp;
	struct sp_diag d = {{0}};
	int r = call(s, "GET", path, NULL, FEED_HOLD_S + 15, 1 << 20, &resp, &d);
	if (r < 0) {
		if (r != SP_ERR_AGAIN)
			log_failure("feed poll failed", d.message);
		return r;
	}
	json_t *body = resp.status == 200 ? json_loads(resp.body, 0, NULL) : NULL;
	if (body == NULL) {
		SP_LOG(SP_LOG_WARN, "feed poll refused", SP_LOG_INT("status", resp.status));
		connector_http_response_free(&resp);
		return SP_ERR_IO;
	}
	connector_http_response_free(&resp);
	json_t *changes = json_object_get(body, "changes");
	json_t *new_seq = json_object_get(body, "seq");
	size_t i;
	json_t *kind;
	json_array_foreach(changes, i, kind)
	{
		if (json_is_string(kind) && strcmp(json_string_value(kind), "config") == 0)
			*config_changed = 1;
	}
	if (json_is_integer(new_seq))
		*seq = json_integer_value(new_seq);
	json_decref(body);
	atomic_store(&s->last_controller_ok, wall_now());
	return 0;
}

static void *control_main(void *arg)
{
	struct connector_shared *s = arg;
	struct sp_jwks keys;
	if (connector_jwks_copy(&s->identity->keys, &keys) < 0)
		return NULL;
	int need_config = 1;
	int64_t seq = -1;
	int64_t config_expires = 0;
	int backoff = BACKOFF_MIN_S;
	while (!atomic_load(&s->stop)) {
		if (config_expires != 0 && wall_now() > config_expires - CONFIG_REFRESH_MARGIN_S)
			need_config = 1;
		if (need_config) {
			/* A signing-key change also names "config": refresh the keys first, so
			 * grants signed by a successor key verify before the config is signed
			 * with it. Failure keeps the keys we have. */
			if (fetch_jwks(s, &keys) == SP_ERR_AGAIN)
				break;
			if (fetch_config(s, &keys) < 0) {
				atomic_fetch_add(&s->controller_errors, 1);
				backoff_wait(s, &backoff);
				continue;
			}
			need_config = 0;
			config_expires = wall_now() + 600;
			if (seq < 0)
				seq = atomic_load(&s->config_seq);
			backoff = BACKOFF_MIN_S;
		}
		int changed = 0;
		int r = poll_feed(s, &seq, &changed);
		if (r == SP_ERR_AGAIN)
			break;
		if (r < 0) {
			atomic_fetch_add(&s->controller_errors, 1);
			backoff_wait(s, &backoff);
			continue;
		}
		backoff = BACKOFF_MIN_S;
		if (changed)
			need_config = 1;
	}
	sp_jwks_free(&keys);
	return NULL;
}

/*
 * Records the controller's clock minus ours (`controller_time` read from an answer to a
 * request sent at `sent`) and warns when it is past CONNECTOR_CLOCK_SKEW_WARN_S.
 */
static void note_skew(struct connector_shared *s, int64_t controller_time, int64_t sent)
{
	int64_t skew = controller_time - sent;
	atomic_store(&s->clock_skew_s, skew);
	if (skew > CONNECTOR_CLOCK_SKEW_WARN_S || skew < -CONNECTOR_CLOCK_SKEW_WARN_S)
		SP_LOG(SP_LOG_WARN,
		       "clock skew with the controller exceeds 60 s: grants will be refused "
		       "as expired or not yet valid; fix NTP on this host or the controller",
		       SP_LOG_INT("skew_s", skew));
}

static int heartbeat(struct connector_shared *s)
{
	json_t *req = json_pack("{s:s?, s:s?}", "direct_address", s->direct_address, "version",
				s->version);
	char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (body == NULL)
		return SP_ERR_NOMEM;
	struct connector_http_response resp;
	struct sp_diag d = {{0}};
	int64_t sent = wall_now();
	int r = call(s, "POST", "/api/connector/v1/heartbeat", body, 20, 65536, &resp, &d);
	free(body);
	if (r < 0) {
		if (r != SP_ERR_AGAIN)
			log_failure("heartbeat failed", d.message);
		return r;
	}
	json_t *answer = resp.status == 200 ? json_loads(resp.body, 0, NULL) : NULL;
	if (answer == NULL) {
		/* a refusal may itself come from the skew (our assertion's iat in its future) */
		if (resp.date > 0)
			note_skew(s, resp.date, sent);
		SP_LOG(SP_LOG_WARN, "heartbeat refused", SP_LOG_INT("status", resp.status),
		       SP_LOG_STR("answer", resp.body));
		connector_http_response_free(&resp);
		return SP_ERR_IO;
	}
	connector_http_response_free(&resp);
	json_t *t = json_object_get(answer, "time");
	if (json_is_integer(t))
		note_skew(s, json_integer_value(t), sent);
	json_decref(answer);
	atomic_store(&s->last_controller_ok, wall_now());
	return 0;
}

static int send_events(struct connector_shared *s, json_t *batch, const atomic_int *stop)
{
	json_t *req = json_pack("{s:O}", "events", batch);
	char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (body == NULL)
		return SP_ERR_NOMEM;
	struct connector_http_response resp;
	struct sp_diag d = {{0}};
	int r = call_stoppable(s, stop, "POST", "/api/connector/v1/flow-events", body,
			       stop != NULL ? 30 : 5, 65536, &resp, &d);
	free(body);
	if (r < 0) {
		log_failure("flow events not sent", d.message);
		return r;
	}
	if (resp.status == 400 || resp.status == 413) {
		/* The controller will never take this batch: drop it rather than loop. */
		SP_LOG(SP_LOG_ERROR, "flow events refused; batch dropped",
		       SP_LOG_INT("status", resp.status), SP_LOG_STR("answer", resp.body));
		connector_http_response_free(&resp);
		return 0;
	}
	r = resp.status == 200 ? 0 : SP_ERR_IO;
	if (r == 0)
		atomic_fetch_add(&s->flow_events_sent, (long long)json_array_size(batch));
	else
		SP_LOG(SP_LOG_WARN, "flow events not accepted", SP_LOG_INT("status", resp.status));
	connector_http_response_free(&resp);
	return r;
}

/* POST /api/connector/v1/relay-token: a fresh token and the relay list, handed over. */
static int fetch_relay_token(struct connector_shared *s)
{
	struct connector_http_response resp;
	struct sp_diag d = {{0}};
	int r = call(s, "POST", "/api/connector/v1/relay-token", "{}", 20, 65536, &resp, &d);
	if (r < 0) {
		if (r != SP_ERR_AGAIN)
			log_failure("relay token not fetched", d.message);
		return r;
	}
	json_t *answer = resp.status == 200 ? json_loads(resp.body, 0, NULL) : NULL;
	if (answer == NULL) {
		SP_LOG(SP_LOG_WARN, "relay token refused", SP_LOG_INT("status", resp.status),
		       SP_LOG_STR("answer", resp.body));
		connector_http_response_free(&resp);
		return SP_ERR_IO;
	}
	connector_http_response_free(&resp);
	struct connector_relay_addr relays[CONNECTOR_RELAY_MAX];
	size_t count = 0;
	const char *token = json_string_value(json_object_get(answer, "token"));
	json_t *exp = json_object_get(answer, "expires_at");
	char *copy = NULL;
	r = connector_relay_list_parse(json_object_get(answer, "relays"), relays, &count, &d);
	if (r == 0 && (token == NULL || strlen(token) == 0 || strlen(token) > SP_RELAY_TOKEN_MAX ||
		       !json_is_integer(exp)))
		r = sp_diag_set(&d, SP_ERR_INVALID, "token and expires_at are required");
	if (r == 0 && (copy = strdup(token)) == NULL)
		r = SP_ERR_NOMEM;
	if (r < 0) {
		log_failure("relay token answer refused", d.message);
		json_decref(answer);
		return r;
	}
	/* Resolved here, on a thread that may block, so the data plane never does. */
	size_t kept = 0;
	for (size_t i = 0; i < count; i++) {
		char port[8];
		snprintf(port, sizeof(port), "%u", (unsigned)relays[i].port);
		struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
		int g = getaddrinfo(relays[i].host, port, &hints, &res);
		if (g != 0 || res == NULL || res->ai_addrlen > sizeof(relays[i].sa)) {
			SP_LOG(SP_LOG_WARN, "relay address does not resolve",
			       SP_LOG_STR("relay", relays[i].text),
			       SP_LOG_STR("detail", g != 0 ? gai_strerror(g) : "no address"));
			if (res != NULL)
				freeaddrinfo(res);
			continue;
		}
		memcpy(&relays[i].sa, res->ai_addr, res->ai_addrlen);
		relays[i].sa_len = res->ai_addrlen;
		freeaddrinfo(res);
		relays[kept++] = relays[i];
	}
	count = kept;
	pthread_mutex_lock(&s->lock);
	if (s->relay_token != NULL) {
		OPENSSL_cleanse(s->relay_token, strlen(s->relay_token));
		free(s->relay_token);
	}
	s->relay_token = copy;
	s->relay_token_expires = json_integer_value(exp);
	s->relay_token_stale = 0;
	memcpy(s->relays, relays, sizeof(relays[0]) * count);
	s->relay_count = count;
	pthread_mutex_unlock(&s->lock);
	json_decref(answer);
	if (s->relay_event != NULL)
		event_active(s->relay_event, EV_READ, 0);
	SP_LOG(SP_LOG_DEBUG, "relay token fetched", SP_LOG_UINT("relays", count));
	return 0;
}

/* Fetches the relay token when it is due, stale or missing; *retry_at paces failures. */
static void relay_token_tick(struct connector_shared *s, int64_t *retry_at, int *backoff)
{
	int64_t now = wall_now();
	pthread_mutex_lock(&s->lock);
	int due = s->relay_token_stale || connector_relay_token_due(s->relay_token_expires, now);
	pthread_mutex_unlock(&s->lock);
	if (!due || now < *retry_at)
		return;
	if (fetch_relay_token(s) == 0) {
		*backoff = BACKOFF_MIN_S;
		*retry_at = 0;
		return;
	}
	atomic_fetch_add(&s->controller_errors, 1);
	*retry_at = now + *backoff;
	*backoff = *backoff * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : *backoff * 2;
}

static void *reporter_main(void *arg)
{
	struct connector_shared *s = arg;
	int64_t next_heartbeat = 0;
	int backoff = BACKOFF_MIN_S;
	json_t *batch = NULL;
	int64_t last_post_ms = 0;
	int64_t retry_at_ms = 0; /* a failed batch waits for this, or for a good heartbeat */
	int64_t relay_retry_at = 0;
	int relay_backoff = BACKOFF_MIN_S;
	while (!atomic_load(&s->stop)) {
		relay_token_tick(s, &relay_retry_at, &relay_backoff);
		if (wall_now() >= next_heartbeat) {
			if (heartbeat(s) == 0) {
				next_heartbeat = wall_now() + CONNECTOR_HEARTBEAT_INTERVAL_S;
				/* the controller is back: send what waited at once, since a
				 * crash before the next retry would lose it */
				retry_at_ms = 0;
				backoff = BACKOFF_MIN_S;
			} else {
				atomic_fetch_add(&s->controller_errors, 1);
				next_heartbeat = wall_now() + backoff;
			}
		}
		int64_t early = last_post_ms + FLOW_EVENTS_MIN_INTERVAL_MS - sp_monotonic_ms();
		if (batch == NULL && early > 0 &&
		    connector_flow_queue_length(&s->flows) < CONNECTOR_FLOW_EVENTS_BATCH) {
			struct timespec nap = {0, (long)early * 1000000L};
			nanosleep(&nap, NULL);
		}
		if (batch == NULL)
			connector_flow_queue_take(&s->flows, CONNECTOR_FLOW_EVENTS_BATCH, 500, &batch);
		if (batch == NULL)
			continue;
		if (sp_monotonic_ms() < retry_at_ms) {
			sleep_interruptible(s, 0.1);
			continue;
		}
		last_post_ms = sp_monotonic_ms();
		if (send_events(s, batch, &s->stop) == 0) {
			json_decref(batch);
			batch = NULL;
			backoff = BACKOFF_MIN_S;
			retry_at_ms = 0;
		} else {
			atomic_fetch_add(&s->controller_errors, 1);
			int64_t delay = backoff_delay_ms(&backoff);
			retry_at_ms = sp_monotonic_ms() +
				      (delay < FLOW_EVENTS_RETRY_MAX_MS ? delay : FLOW_EVENTS_RETRY_MAX_MS);
		}
	}
	/* Last chance for what is queued at shutdown: one attempt per batch, short. */
	for (int i = 0; i < 10; i++) {
		if (batch == NULL)
			connector_flow_queue_take(&s->flows, CONNECTOR_FLOW_EVENTS_BATCH, 0, &batch);
		if (batch == NULL || send_events(s, batch, NULL) < 0)
			break;
		json_decref(batch);
		batch = NULL;
	}
	json_decref(batch);
	return NULL;
}

int connector_control_start(struct connector_shared *s, pthread_t threads[2])
{
	if (pthread_create(&threads[0], NULL, control_main, s) != 0)
		return SP_ERR_IO;
	if (pthread_create(&threads[1], NULL, reporter_main, s) != 0) {
		atomic_store(&s->stop, 1);
		pthread_join(threads[0], NULL);
		return SP_ERR_IO;
	}
	return 0;
}

void connector_control_stop(struct connector_shared *s, pthread_t threads[2])
{
	atomic_store(&s->stop, 1);
	connector_flow_queue_wake(&s->flows);
	pthread_join(threads[0], NULL);
	pthread_join(threads[1], NULL);
}
