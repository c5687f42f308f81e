/* controller/relay.c — see relay.h. Everything below runs on the relay thread except
 * relay_start, relay_set_keys, relay_sync_keys and relay_stop. */
#include "controller/relay.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "shared/log.h"
#include "shared/token.h"

#define PREAMBLE_BUF 8192
#define COPY_BUF (64 * 1024)
#define SPLICE_CHUNK (256 * 1024)
#define PIPE_SIZE (256 * 1024)
#define PUMP_BUDGET 16
#define CONTROL_OUT_MAX (64 * 1024)

/* ---- tables: sorted arrays of 32-byte keys (bounded, O(log n) lookup) ---- */

struct kent {
	uint8_t key[32];
	void *ptr;
	int64_t num;
};

struct ktab {
	struct kent *e;
	size_t n, cap, max;
};

static size_t ktab_lower(const struct ktab *t, const uint8_t key[32])
{
	size_t lo = 0, hi = t->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (memcmp(t->e[mid].key, key, 32) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct kent *ktab_find(struct ktab *t, const uint8_t key[32])
{
	size_t i = ktab_lower(t, key);
	return i < t->n && memcmp(t->e[i].key, key, 32) == 0 ? &t->e[i] : NULL;
}

/* A new zeroed entry for a key not in the table; NULL when full or out of memory. */
static struct kent *ktab_insert(struct ktab *t, const uint8_t key[32])
{
	if (t->n >= t->max)
		return NULL;
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		struct kent *e = realloc(t->e, cap * sizeof(*e));
		if (e == NULL)
			return NULL;
		t->e = e;
		t->cap = cap;
	}
	size_t i = ktab_lower(t, key);
	memmove(&t->e[i + 1], &t->e[i], (t->n - i) * sizeof(*t->e));
	t->n++;
	memset(&t->e[i], 0, sizeof(t->e[i]));
	memcpy(t->e[i].key, key, 32);
	return &t->e[i];
}

static void ktab_remove(struct ktab *t, const uint8_t key[32])
{
	size_t i = ktab_lower(t, key);
	if (i < t->n && memcmp(t->e[i].key, key, 32) == 0) {
		memmove(&t->e[i], &t->e[i + 1], (t->n - i - 1) * sizeof(*t->e));
		t->n--;
	}
}

/*
 * Ticket ids seen: an open-addressing hash set of SHA-256(jti) with each ticket's exp.
 * Slots are never emptied one by one (an expired entry stays in its probe chain and may be
 * overwritten by a new id); when `max` slots are used the set is rebuilt without expired
 * entries. At most `max` live ids: beyond that, tickets are refused (overloaded).
 */
struct seen {
	uint8_t key[32];
	int64_t exp;
	int used;
};

struct seen_set {
	struct seen *slot;
	size_t cap;  /* a power of two, at least 4 * max */
	size_t used; /* slots holding an entry, live or expired */
	size_t max;
};

static size_t seen_hash(const uint8_t key[32], size_t cap)
{
	uint64_t h;
	memcpy(&h, key, sizeof(h)); /* the key is a SHA-256 digest: uniform already */
	return (size_t)(h & (cap - 1));
}

static int seen_init(struct seen_set *s, size_t max)
{
	size_t cap = 16;
	while (cap < 4 * max)
		cap *= 2;
	s->slot = calloc(cap, sizeof(*s->slot));
	s->cap = cap;
	s->used = 0;
	s->max = max;
	return s->slot != NULL ? 0 : SP_ERR_NOMEM;
}

/* Drops expired entries: rebuilds the table in place through a fresh array. */
static void seen_rebuild(struct seen_set *s, int64_t now)
{
	struct seen *fresh = calloc(s->cap, sizeof(*fresh));
	if (fresh == NULL)
		return;
	size_t used = 0;
	for (size_t i = 0; i < s->cap; i++) {
		if (!s->slot[i].used || s->slot[i].exp < now)
			continue;
		size_t k = seen_hash(s->slot[i].key, s->cap);
		while (fresh[k].used)
			k = (k + 1) & (s->cap - 1);
		fresh[k] = s->slot[i];
		used++;
	}
	free(s->slot);
	s->slot = fresh;
	s->used = used;
}

/*
 * Records key until exp. SP_RELAY_PAIRED when new, SP_RELAY_REPLAYED when a live entry
 * has it, SP_RELAY_OVERLOADED when `max` ids are live. At most max slots are used, so the
 * table is never more than a quarter full.
 */
static int seen_add(struct seen_set *s, const uint8_t key[32], int64_t exp, int64_t now)
{
	size_t k = seen_hash(key, s->cap), reuse = s->cap;
	while (s->slot[k].used) {
		if (memcmp(s->slot[k].key, key, 32) == 0) {
			if (s->slot[k].exp >= now)
				return SP_RELAY_REPLAYED;
			reuse = k;
			break;
		}
		if (reuse == s->cap && s->slot[k].exp < now)
			reuse = k; /* an expired id: its slot can take this one */
		k = (k + 1) & (s->cap - 1);
	}
	if (reuse == s->cap) {
		if (s->used >= s->max) {
			seen_rebuild(s, now);
			if (s->used >= s->max)
				return SP_RELAY_OVERLOADED;
			/* The key is not in the rebuilt set: find the end of its probe chain. */
			k = seen_hash(key, s->cap);
			while (s->slot[k].used)
				k = (k + 1) & (s->cap - 1);
		}
		reuse = k;
		s->used++;
	}
	memcpy(s->slot[reuse].key, key, 32);
	s->slot[reuse].exp = exp;
	s->slot[reuse].used = 1;
	return SP_RELAY_PAIRED;
}

/* ---- connections ---- */

enum conn_kind { CONN_NEW, CONN_CONTROL, CONN_WAITING };

struct relay;

struct conn {
	struct relay *relay;
	struct conn *prev, *next;
	enum conn_kind kind;
	int fd;
	struct event *rev;     /* read (preamble, control close) + timeouts */
	struct event *wev;     /* control: write pending dials */
	uint8_t buf[PREAMBLE_BUF];
	size_t len;            /* bytes in buf */
	size_t used;           /* bytes of the preamble (the rest goes to the peer first) */
	uint8_t ip[32];        /* client address as a table key */
	int counted;           /* counted in per-IP and global limits */
	uint8_t cid[32];       /* control connections */
	uint8_t *out;          /* control: dials not yet written */
	size_t out_len;
	uint8_t pairing[32];   /* waiting clients: pairing id, zero padded */
};

struct pair;

struct direction {
	struct pair *pair;
	int src, dst;
	struct event *rev; /* src readable */
	struct event *wev; /* dst writable */
	int pipe[2];
	size_t in_pipe;
	int use_splice;
	uint8_t *buf; /* bytes to write before the pipe: preamble leftovers, or the copy buffer */
	size_t off, len, cap;
	int eof, done;
	struct sp_metric *bytes;
};

struct pair {
	struct relay *relay;
	struct pair *prev, *next;
	struct direction up, down; /* up: client -> connector */
	int client_fd, data_fd;
	uint8_t ip[32];
};

struct relay {
	struct relay_options o;
	struct relay_metrics *m;
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *wake;
	struct event *resume;  /* re-enables accepting after running out of descriptors */
	int wake_pipe[2];
	pthread_t thread;
	int thread_started;
	uint16_t port;

	pthread_mutex_t keys_lock;
	struct sp_jwks *pending_keys; /* under keys_lock */
	struct sp_jwks *keys;         /* relay thread */
	char *synced_doc;             /* the owner thread of relay_sync_keys */
	size_t synced_len;

	struct conn *conns;
	size_t unidentified;
	struct pair *pairs;
	size_t clients; /* waiting + paired */
	struct seen_set replay;
	struct ktab connectors, pending, per_ip;
};

static int64_t relay_now(const struct relay *r)
{
	return r->o.now != NULL ? r->o.now() : (int64_t)time(NULL);
}

static void count(struct sp_metric *m, int64_t n)
{
	if (m != NULL && m->name != NULL)
		sp_metric_add(m, n);
}

static void refuse_count(struct relay *r, uint8_t status)
{
	if (r->m != NULL && status >= 1 && status <= SP_RELAY_OVERLOADED)
		count(&r->m->refused[status], 1);
}

/* ---- metrics ---- */

void relay_metrics_register(struct relay_metrics *m, struct sp_metrics_registry *registry)
{
	static const char *const labels[] = {
		NULL, "status=\"bad_ticket\"", "status=\"expired\"", "status=\"replayed\"",
		"status=\"connector_unavailable\"", "status=\"overloaded\""};
	memset(m, 0, sizeof(*m));
	m->paired = (struct sp_metric){.name = "sallyport_relay_paired_total",
	                               .help = "Client connections paired with a connector.",
	                               .type = SP_METRIC_COUNTER};
	m->active = (struct sp_metric){.name = "sallyport_relay_connections",
	                               .help = "Relayed connections open now.",
	                               .type = SP_METRIC_GAUGE};
	m->bytes_up = (struct sp_metric){.name = "sallyport_relay_bytes_total",
	                                 .help = "Bytes relayed.", .labels = "direction=\"up\"",
	                                 .type = SP_METRIC_COUNTER};
	m->bytes_down = (struct sp_metric){.name = "sallyport_relay_bytes_total",
	                                   .help = "Bytes relayed.", .labels = "direction=\"down\"",
	                                   .type = SP_METRIC_COUNTER};
	m->connectors = (struct sp_metric){.name = "sallyport_relay_connectors",
	                                   .help = "Connectors registered at the relay.",
	                                   .type = SP_METRIC_GAUGE};
	for (int s = 1; s <= SP_RELAY_OVERLOADED; s++)
		m->refused[s] = (struct sp_metric){.name = "sallyport_relay_refused_total",
		                                   .help = "Relay connections refused, by status.",
		                                   .labels = labels[s], .type = SP_METRIC_COUNTER};
	if (registry == NULL)
		return;
	(void)sp_metrics_register(registry, &m->paired);
	(void)sp_metrics_register(registry, &m->active);
	(void)sp_metrics_register(registry, &m->bytes_up);
	(void)sp_metrics_register(registry, &m->bytes_down);
	(void)sp_metrics_register(registry, &m->connectors);
	for (int s = 1; s <= SP_RELAY_OVERLOADED; s++)
		(void)sp_metrics_register(registry, &m->refused[s]);
}

/* ---- token checks ---- */

int relay_connector_cid(const char *connector_id, char out[SP_JWK_THUMBPRINT_LEN + 1])
{
	uint8_t digest[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)connector_id, strlen(connector_id), digest);
	return sp_jwk_base64url_encode(digest, sizeof(digest), out, SP_JWK_THUMBPRINT_LEN + 1);
}

static int int_claim(const json_t *claims, const char *name, int64_t *out)
{
	json_t *v = json_object_get(claims, name);
	if (!json_is_integer(v))
		return -1;
	*out = (int64_t)json_integer_value(v);
	return 0;
}

static int string_is(const json_t *claims, const char *name, const char *want)
{
	const char *v = json_string_value(json_object_get(claims, name));
	return v != NULL && strcmp(v, want) == 0;
}

int relay_check_token(const struct sp_jwks *keys, const char *typ, const uint8_t *jws,
                      size_t len, int64_t now, struct relay_token *out)
{
	struct sp_diag d;
	json_t *claims = NULL;
	int ticket = strcmp(typ, RELAY_TICKET_TYP) == 0;
	int64_t ttl = ticket ? RELAY_TICKET_TTL_S : RELAY_CONNECTOR_TOKEN_TTL_S;
	int status = SP_RELAY_BAD_TICKET;
	memset(out, 0, sizeof(*out));
	if (keys == NULL ||
	    sp_token_verify((const char *)jws, len, keys, "ES256", &claims, &d) < 0)
		goto out;
	int64_t v = 0, iat = 0, exp = 0;
	if (int_claim(claims, "v", &v) < 0 || v != 1 || !string_is(claims, "typ", typ) ||
	    !string_is(claims, "aud", RELAY_AUDIENCE) || int_claim(claims, "iat", &iat) < 0 ||
	    int_claim(claims, "exp", &exp) < 0)
		goto out;
	const char *cid = json_string_value(json_object_get(claims, "cid"));
	size_t cid_len = 0;
	if (cid == NULL || strlen(cid) != SP_JWK_THUMBPRINT_LEN ||
	    sp_jwk_base64url_decode(cid, SP_JWK_THUMBPRINT_LEN, out->cid, sizeof(out->cid),
	                            &cid_len) < 0 ||
	    cid_len != sizeof(out->cid))
		goto out;
	if (ticket) {
		const char *jti = json_string_value(json_object_get(claims, "jti"));
		if (jti == NULL || strlen(jti) == 0 || strlen(jti) >= sizeof(out->jti))
			goto out;
		memcpy(out->jti, jti, strlen(jti) + 1);
	}
	if (iat > now + RELAY_SKEW_S)
		goto out;
	out->exp = exp;
	status = exp < now || exp - iat > ttl ? SP_RELAY_EXPIRED : SP_RELAY_PAIRED;
out:
	json_decref(claims);
	if (status != SP_RELAY_PAIRED) {
		uint8_t keep[32];
		memcpy(keep, out->cid, sizeof(keep));
		memset(out, 0, sizeof(*out));
		if (status == SP_RELAY_EXPIRED)
			memcpy(out->cid, keep, sizeof(keep));
	}
	return status;
}

/* The newest key set handed over, taken on the relay thread. */
static const struct sp_jwks *current_keys(struct relay *r)
{
	pthread_mutex_lock(&r->keys_lock);
	struct sp_jwks *fresh = r->pending_keys;
	r->pending_keys = NULL;
	pthread_mutex_unlock(&r->keys_lock);
	if (fresh != NULL) {
		if (r->keys != NULL) {
			sp_jwks_free(r->keys);
			free(r->keys);
		}
		r->keys = fresh;
	}
	return r->keys;
}

int relay_set_keys(struct relay *r, const char *jwks_document, size_t length)
{
	struct sp_diag d;
	struct sp_jwks *set = calloc(1, sizeof(*set));
	if (set == NULL)
		return SP_ERR_NOMEM;
	if (sp_jwks_parse(jwks_document, length, set, &d) < 0) {
		free(set);
		SP_LOG(SP_LOG_WARN, "relay: key set refused", SP_LOG_STR("reason", d.message));
		return SP_ERR_INVALID;
	}
	pthread_mutex_lock(&r->keys_lock);
	struct sp_jwks *old = r->pending_keys;
	r->pending_keys = set;
	pthread_mutex_unlock(&r->keys_lock);
	if (old != NULL) {
		sp_jwks_free(old);
		free(old);
	}
	return 0;
}

void relay_sync_keys(struct relay *r, const char *jwks_document, size_t length)
{
	if (r == NULL || jwks_document == NULL)
		return;
	if (r->synced_doc != NULL && r->synced_len == length &&
	    memcmp(r->synced_doc, jwks_document, length) == 0)
		return;
	char *copy = malloc(length + 1);
	if (copy == NULL)
		return;
	memcpy(copy, jwks_document, length);
	copy[length] = '\0';
	if (relay_set_keys(r, jwks_document, length) < 0) {
		free(copy);
		return;
	}
	free(r->synced_doc);
	r->synced_doc = copy;
	r->synced_len = length;
}

/* ---- connection bookkeeping ---- */

static void per_ip_release(struct relay *r, const uint8_t ip[32])
{
	struct kent *e = ktab_find(&r->per_ip, ip);
	if (e != NULL && --e->num <= 0)
		ktab_remove(&r->per_ip, ip);
	if (r->clients > 0)
		r->clients--;
}

static void conn_free(struct conn *c)
{
	struct relay *r = c->relay;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		r->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->kind == CONN_NEW && r->unidentified > 0)
		r->unidentified--;
	if (c->kind == CONN_CONTROL) {
		struct kent *e = ktab_find(&r->connectors, c->cid);
		if (e != NULL && e->ptr == c) {
			ktab_remove(&r->connectors, c->cid);
			if (r->m != NULL)
				count(&r->m->connectors, -1);
		}
	}
	if (c->kind == CONN_WAITING) {
		struct kent *e = ktab_find(&r->pending, c->pairing);
		if (e != NULL && e->ptr == c)
			ktab_remove(&r->pending, c->pairing);
	}
	if (c->counted)
		per_ip_release(r, c->ip);
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	if (c->fd >= 0)
		close(c->fd);
	free(c->out);
	free(c);
}

/* Sends one status byte (best effort: the socket is fresh and its buffer empty). */
static void send_status(int fd, uint8_t status)
{
	(void)send(fd, &status, 1, MSG_NOSIGNAL);
}

static void refuse(struct conn *c, uint8_t status)
{
	refuse_count(c->relay, status);
	send_status(c->fd, status);
	conn_free(c);
}

/* ---- splicing ---- */

static void pair_free(struct pair *p)
{
	struct relay *r = p->relay;
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		r->pairs = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	struct direction *dirs[2] = {&p->up, &p->down};
	for (int i = 0; i < 2; i++) {
		struct direction *d = dirs[i];
		if (d->rev != NULL)
			event_free(d->rev);
		if (d->wev != NULL)
			event_free(d->wev);
		for (int k = 0; k < 2; k++)
			if (d->pipe[k] >= 0)
				close(d->pipe[k]);
		free(d->buf);
	}
	close(p->client_fd);
	close(p->data_fd);
	per_ip_release(r, p->ip);
	if (r->m != NULL)
		count(&r->m->active, -1);
	free(p);
}

static void want(struct direction *d, int read)
{
	if (read) {
		event_del(d->wev);
		event_add(d->rev, NULL);
	} else {
		event_del(d->rev);
		event_add(d->wev, NULL);
	}
}

static int would_block(void)
{
	return errno == EAGAIN || errno == EWOULDBLOCK;
}

/* Moves bytes from src to dst until either would block. Returns 1 when the pair was
 * freed. */
static int pump(struct direction *d)
{
	struct pair *p = d->pair;
	for (int budget = PUMP_BUDGET; budget > 0; budget--) {
		ssize_t n;
		if (d->off < d->len) {
			n = send(d->dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
			if (n > 0) {
				d->off += (size_t)n;
				count(d->bytes, n);
				continue;
			}
			if (n < 0 && would_block()) {
				want(d, 0);
				return 0;
			}
			pair_free(p);
			return 1;
		}
		if (d->in_pipe > 0) {
			n = splice(d->pipe[0], NULL, d->dst, NULL, d->in_pipe,
			           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->in_pipe -= (size_t)n;
				count(d->bytes, n);
				continue;
			}
			if (n < 0 && would_block()) {
				want(d, 0);
				return 0;
			}
			pair_free(p);
			return 1;
		}
		if (d->eof) {
			(void)shutdown(d->dst, SHUT_WR);
			d->done = 1;
			event_del(d->rev);
			event_del(d->wev);
			struct direction *other = d == &p->up ? &p->down : &p->up;
			if (other->done) {
				pair_free(p);
				return 1;
			}
			return 0;
		}
		if (d->use_splice) {
			n = splice(d->src, NULL, d->pipe[1], NULL, SPLICE_CHUNK,
			           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				d->in_pipe = (size_t)n;
				continue;
			}
			if (n == 0) {
				d->eof = 1;
				continue;
			}
			if (would_block()) {
				want(d, 1);
				return 0;
			}
			if (errno == EINVAL || errno == ENOSYS) {
				d->use_splice = 0; /* fall back to read/write */
				continue;
			}
			pair_free(p);
			return 1;
		}
		if (d->cap < COPY_BUF) {
			uint8_t *b = realloc(d->buf, COPY_BUF);
			if (b == NULL) {
				pair_free(p);
				return 1;
			}
			d->buf = b;
			d->cap = COPY_BUF;
		}
		n = recv(d->src, d->buf, d->cap, 0);
		if (n > 0) {
			d->off = 0;
			d->len = (size_t)n;
			continue;
		}
		if (n == 0) {
			d->eof = 1;
			continue;
		}
		if (would_block()) {
			want(d, 1);
			return 0;
		}
		pair_free(p);
		return 1;
	}
	/* Out of budget: come back on whichever event makes progress. */
	want(d, !(d->off < d->len || d->in_pipe > 0));
	return 0;
}

static void on_direction(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)pump(arg);
}

static int direction_init(struct relay *r, struct pair *p, struct direction *d, int src, int dst,
                          const uint8_t *early, size_t early_len, struct sp_metric *bytes)
{
	d->pair = p;
	d->src = src;
	d->dst = dst;
	d->bytes = bytes;
	d->pipe[0] = d->pipe[1] = -1;
	if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) == 0) {
		(void)fcntl(d->pipe[1], F_SETPIPE_SZ, PIPE_SIZE);
		d->use_splice = 1;
	} else {
		d->pipe[0] = d->pipe[1] = -1;
	}
	if (early_len > 0) {
		d->buf = malloc(early_len);
		if (d->buf == NULL)
			return SP_ERR_NOMEM;
		memcpy(d->buf, early, early_len);
		d->len = early_len;
	}
	d->rev = event_new(r->base, src, EV_READ | EV_PERSIST, on_direction, d);
	d->wev = event_new(r->base, dst, EV_WRITE | EV_PERSIST, on_direction, d);
	return d->rev != NULL && d->wev != NULL ? 0 : SP_ERR_NOMEM;
}

/* A data connection answered the dial of the waiting client w. */
static void pair_up(struct conn *w, struct conn *data)
{
	struct relay *r = w->relay;
	struct pair *p = calloc(1, sizeof(*p));
	if (p == NULL) {
		refuse(w, SP_RELAY_OVERLOADED);
		conn_free(data);
		return;
	}
	p->relay = r;
	/* Both directions must be safe for pair_free even when the first init fails. */
	p->up.pipe[0] = p->up.pipe[1] = p->down.pipe[0] = p->down.pipe[1] = -1;
	p->client_fd = w->fd;
	p->data_fd = data->fd;
	/*
	 * The relay passes on each piece as it arrives. With Nagle on, a small TLS record (a
	 * request, a stream open) waited in the relay for the ACK of the previous one, which
	 * the far end delays by up to 40 ms: relayed new flows/s were an eighth of direct.
	 */
	int one = 1;
	(void)setsockopt(p->client_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)setsockopt(p->data_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memcpy(p->ip, w->ip, sizeof(p->ip));
	struct sp_metric *up = r->m != NULL ? &r->m->bytes_up : NULL;
	struct sp_metric *down = r->m != NULL ? &r->m->bytes_down : NULL;
	int ok = direction_init(r, p, &p->up, w->fd, data->fd, w->buf + w->used, w->len - w->used,
	                        up) == 0 &&
	         direction_init(r, p, &p->down, data->fd, w->fd, data->buf + data->used,
	                        data->len - data->used, down) == 0;
	/* The sockets and the client's count now belong to the pair. */
	w->fd = -1;
	data->fd = -1;
	w->counted = 0;
	conn_free(w);
	conn_free(data);
	p->next = r->pairs;
	if (r->pairs != NULL)
		r->pairs->prev = p;
	r->pairs = p;
	if (r->m != NULL) {
		count(&r->m->active, 1);
		count(&r->m->paired, 1);
	}
	if (!ok) {
		pair_free(p);
		return;
	}
	uint8_t paired = SP_RELAY_PAIRED;
	if (send(p->client_fd, &paired, 1, MSG_NOSIGNAL) != 1) {
		pair_free(p);
		return;
	}
	if (pump(&p->up) == 0)
		(void)pump(&p->down);
}

/* ---- control connections ---- */

static void control_flush(struct conn *c)
{
	while (c->out_len > 0) {
		ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
		if (n > 0) {
			memmove(c->out, c->out + n, c->out_len - (size_t)n);
			c->out_len -= (size_t)n;
			continue;
		}
		if (n < 0 && would_block()) {
			event_add(c->wev, NULL);
			return;
		}
		conn_free(c);
		return;
	}
	event_del(c->wev);
}

static void on_control_write(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	control_flush(arg);
}

static void on_control_read(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct conn *c = arg;
	uint8_t b[64];
	ssize_t n = recv(fd, b, sizeof(b), 0);
	if (n < 0 && would_block())
		return;
	/* The connector sends nothing after its preamble: a byte or a close ends it. */
	SP_LOG(SP_LOG_INFO, "relay: connector left", SP_LOG_INT("reason_bytes", n));
	conn_free(c);
}

static int send_dial(struct conn *control, const uint8_t pairing[SP_RELAY_PAIRING_ID_LEN])
{
	if (control->out_len + SP_RELAY_DIAL_LEN > CONTROL_OUT_MAX)
		return SP_ERR_TOO_LARGE;
	if (control->out == NULL && (control->out = malloc(CONTROL_OUT_MAX)) == NULL)
		return SP_ERR_NOMEM;
	control->out[control->out_len] = 'D';
	memcpy(control->out + control->out_len + 1, pairing, SP_RELAY_PAIRING_ID_LEN);
	control->out_len += SP_RELAY_DIAL_LEN;
	return 0;
}

static void identified(struct conn *c, enum conn_kind kind)
{
	c->kind = kind;
	if (c->relay->unidentified > 0)
		c->relay->unidentified--;
	event_del(c->rev);
}

static void on_register(struct conn *c, const struct sp_relay_register *h)
{
	struct relay *r = c->relay;
	struct relay_token t;
	int status = relay_check_token(current_keys(r), RELAY_CONNECTOR_TYP, h->token,
	                               h->token_len, relay_now(r), &t);
	if (status != SP_RELAY_PAIRED) {
		refuse(c, (uint8_t)status);
		return;
	}
	struct kent *e = ktab_find(&r->connectors, t.cid);
	if (e != NULL) {
		struct conn *old = e->ptr; /* replaced: its registration ends here */
		conn_free(old);
		e = NULL;
	}
	e = ktab_insert(&r->connectors, t.cid);
	if (e == NULL) {
		refuse(c, SP_RELAY_OVERLOADED);
		return;
	}
	identified(c, CONN_CONTROL);
	e->ptr = c;
	memcpy(c->cid, t.cid, sizeof(c->cid));
	if (r->m != NULL)
		count(&r->m->connectors, 1);
	int on = 1;
	(void)setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	send_status(c->fd, SP_RELAY_PAIRED);
	event_free(c->rev);
	c->rev = event_new(r->base, c->fd, EV_READ | EV_PERSIST, on_control_read, c);
	c->wev = event_new(r->base, c->fd, EV_WRITE | EV_PERSIST, on_control_write, c);
	if (c->rev == NULL || c->wev == NULL) {
		conn_free(c);
		return;
	}
	event_add(c->rev, NULL);
	SP_LOG(SP_LOG_INFO, "relay: connector registered",
	       SP_LOG_UINT("connectors", r->connectors.n));
	/* Bytes after the preamble break the protocol. */
	if (c->len > c->used)
		conn_free(c);
}

static void on_pairing_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	refuse(arg, SP_RELAY_CONNECTOR_UNAVAILABLE);
}

static void on_client(struct conn *c, const struct sp_relay_client_hello *h)
{
	struct relay *r = c->relay;
	if (r->clients >= r->o.max_connections) {
		refuse(c, SP_RELAY_OVERLOADED);
		return;
	}
	struct kent *ip = ktab_find(&r->per_ip, c->ip);
	if (ip != NULL && (size_t)ip->num >= r->o.max_per_client) {
		refuse(c, SP_RELAY_OVERLOADED);
		return;
	}
	int64_t now = relay_now(r);
	struct relay_token t;
	int status = relay_check_token(current_keys(r), RELAY_TICKET_TYP, h->ticket, h->ticket_len,
	                               now, &t);
	if (status != SP_RELAY_PAIRED) {
		refuse(c, (uint8_t)status);
		return;
	}
	uint8_t jkey[32];
	SHA256((const unsigned char *)t.jti, strlen(t.jti), jkey);
	status = seen_add(&r->replay, jkey, t.exp, now);
	if (status != SP_RELAY_PAIRED) {
		refuse(c, (uint8_t)status);
		return;
	}
	struct kent *ce = ktab_find(&r->connectors, t.cid);
	if (ce == NULL) {
		refuse(c, SP_RELAY_CONNECTOR_UNAVAILABLE);
		return;
	}
	struct conn *control = ce->ptr;
	uint8_t pairing[32] = {0};
	if (RAND_bytes(pairing, SP_RELAY_PAIRING_ID_LEN) != 1) {
		refuse(c, SP_RELAY_OVERLOADED);
		return;
	}
	struct kent *pe = ktab_insert(&r->pending, pairing);
	if (pe == NULL) {
		refuse(c, SP_RELAY_OVERLOADED);
		return;
	}
	pe->ptr = c;
	if (ip == NULL && (ip = ktab_insert(&r->per_ip, c->ip)) == NULL) {
		ktab_remove(&r->pending, pairing);
		refuse(c, SP_RELAY_OVERLOADED);
		return;
	}
	ip->num++;
	r->clients++;
	c->counted = 1;
	identified(c, CONN_WAITING);
	memcpy(c->pairing, pairing, sizeof(c->pairing));
	event_free(c->rev);
	c->rev = evtimer_new(r->base, on_pairing_timeout, c);
	struct timeval tv = {(time_t)(r->o.pairing_timeout_ms / 1000),
	                     (suseconds_t)(r->o.pairing_timeout_ms % 1000) * 1000};
	if (c->rev == NULL || send_dial(control, pairing) < 0) {
		refuse(c, SP_RELAY_OVERLOADED);
		return;
	}
	event_add(c->rev, &tv);
	control_flush(control);
}

static void on_data(struct conn *c, const uint8_t id[SP_RELAY_PAIRING_ID_LEN])
{
	struct relay *r = c->relay;
	uint8_t key[32] = {0};
	memcpy(key, id, SP_RELAY_PAIRING_ID_LEN);
	struct kent *e = ktab_find(&r->pending, key);
	if (e == NULL) {
		conn_free(c); /* unknown or late: no answer on a data connection */
		return;
	}
	struct conn *w = e->ptr;
	ktab_remove(&r->pending, key);
	pair_up(w, c);
}

/* Reads a connection's preamble and decides what it is. */
static void on_preamble(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (what & EV_TIMEOUT) {
		conn_free(c);
		return;
	}
	ssize_t n = recv(fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
	if (n < 0 && would_block())
		return;
	if (n <= 0) {
		conn_free(c);
		return;
	}
	c->len += (size_t)n;
	struct sp_relay_client_hello ch;
	struct sp_relay_register kh;
	uint8_t id[SP_RELAY_PAIRING_ID_LEN];
	int rc = sp_relay_client_hello_decode(c->buf, c->len, &ch);
	if (rc != SP_ERR_INVALID) {
		if (rc > 0) {
			c->used = (size_t)rc;
			on_client(c, &ch);
		} else if (rc != SP_ERR_AGAIN) {
			refuse(c, SP_RELAY_BAD_TICKET);
		}
		return;
	}
	rc = sp_relay_register_decode(c->buf, c->len, &kh);
	if (rc != SP_ERR_INVALID) {
		if (rc > 0) {
			c->used = (size_t)rc;
			on_register(c, &kh);
		} else if (rc != SP_ERR_AGAIN) {
			refuse(c, SP_RELAY_BAD_TICKET);
		}
		return;
	}
	rc = sp_relay_connector_hello_decode(c->buf, c->len, id);
	if (rc > 0) {
		c->used = (size_t)rc;
		on_data(c, id);
	} else if (rc != SP_ERR_AGAIN) {
		conn_free(c);
	}
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
	(void)l;
	(void)salen;
	struct relay *r = arg;
	if (r->unidentified >= r->o.max_unidentified) {
		close(fd);
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (c == NULL) {
		close(fd);
		return;
	}
	c->relay = r;
	c->fd = fd;
	c->kind = CONN_NEW;
	if (sa->sa_family == AF_INET) {
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		memcpy(c->ip, mapped, sizeof(mapped));
		memcpy(c->ip + 12, &((struct sockaddr_in *)(void *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		memcpy(c->ip, &((struct sockaddr_in6 *)(void *)sa)->sin6_addr, 16);
	}
	c->next = r->conns;
	if (r->conns != NULL)
		r->conns->prev = c;
	r->conns = c;
	r->unidentified++;
	(void)evutil_make_socket_nonblocking(fd);
	c->rev = event_new(r->base, fd, EV_READ | EV_PERSIST, on_preamble, c);
	if (c->rev == NULL) {
		conn_free(c);
		return;
	}
	struct timeval tv = {(time_t)(r->o.preamble_timeout_ms / 1000),
	                     (suseconds_t)(r->o.preamble_timeout_ms % 1000) * 1000};
	event_add(c->rev, &tv);
}

/* Out of file descriptors: stop accepting for 100 ms rather than spin on accept. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
	struct relay *r = arg;
	int e = EVUTIL_SOCKET_ERROR();
	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM)
		return;
	SP_LOG(SP_LOG_WARN, "relay: out of descriptors, pausing accept",
	       SP_LOG_UINT("connections", r->clients));
	evconnlistener_disable(l);
	struct timeval tv = {0, 100 * 1000};
	event_add(r->resume, &tv);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct relay *r = arg;
	evconnlistener_enable(r->listener);
}

/* ---- thread and life cycle ---- */

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	char b[8];
	if (read(fd, b, sizeof(b)) < 0) {
		/* nothing to do: the wake-up is the point */
	}
	event_base_loopbreak(((struct relay *)arg)->base);
}

static void *relay_thread(void *arg)
{
	struct relay *r = arg;
	event_base_dispatch(r->base);
	return NULL;
}

static int resolve(const char *listen, struct sockaddr_storage *ss, int *len, struct sp_diag *diag)
{
	*len = (int)sizeof(*ss);
	if (evutil_parse_sockaddr_port(listen, (struct sockaddr *)ss, len) == 0)
		return 0;
	const char *colon = strrchr(listen, ':');
	char host[256];
	if (colon == NULL || (size_t)(colon - listen) >= sizeof(host))
		return sp_diag_set(diag, SP_ERR_INVALID, "relay_listen %s is not host:port", listen);
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res = NULL;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "relay_listen %s does not resolve", listen);
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = (int)res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Ends every connection and the listener (the loop is not running). */
static void relay_close_all(struct relay *r)
{
	while (r->pairs != NULL)
		pair_free(r->pairs);
	while (r->conns != NULL)
		conn_free(r->conns);
	if (r->listener != NULL)
		evconnlistener_free(r->listener);
	r->listener = NULL;
}

static void relay_destroy(struct relay *r)
{
	relay_close_all(r);
	if (r->wake != NULL)
		event_free(r->wake);
	if (r->resume != NULL)
		event_free(r->resume);
	for (int i = 0; i < 2; i++)
		if (r->wake_pipe[i] >= 0)
			close(r->wake_pipe[i]);
	if (r->base != NULL)
		event_base_free(r->base);
	free(r->replay.slot);
	free(r->connectors.e);
	free(r->pending.e);
	free(r->per_ip.e);
	if (r->keys != NULL) {
		sp_jwks_free(r->keys);
		free(r->keys);
	}
	if (r->pending_keys != NULL) {
		sp_jwks_free(r->pending_keys);
		free(r->pending_keys);
	}
	free(r->synced_doc);
	pthread_mutex_destroy(&r->keys_lock);
	free(r);
}

static size_t or_default(size_t v, size_t d)
{
	return v > 0 ? v : d;
}

int relay_start(const struct relay_options *o, struct relay **out, struct sp_diag *diag)
{
	*out = NULL;
	struct relay *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&r->keys_lock, NULL);
	r->wake_pipe[0] = r->wake_pipe[1] = -1;
	r->o = *o;
	r->o.max_connections = or_default(o->max_connections, 4096);
	r->o.max_per_client = or_default(o->max_per_client, 64);
	r->o.max_pending = or_default(o->max_pending, 1024);
	r->o.max_connectors = or_default(o->max_connectors, 65536);
	r->o.max_replay = or_default(o->max_replay, 65536);
	r->o.max_unidentified = or_default(o->max_unidentified, 1024);
	if (r->o.pairing_timeout_ms <= 0)
		r->o.pairing_timeout_ms = 5000;
	if (r->o.preamble_timeout_ms <= 0)
		r->o.preamble_timeout_ms = 10000;
	r->o.listen = NULL;
	r->o.jwks_document = NULL;
	r->m = o->metrics;
	r->connectors.max = r->o.max_connectors;
	r->pending.max = r->o.max_pending;
	r->per_ip.max = r->o.max_connections;
	int rc = SP_ERR_IO;
	if (seen_init(&r->replay, r->o.max_replay) < 0) {
		rc = sp_diag_set(diag, SP_ERR_NOMEM, "relay: out of memory");
		goto fail;
	}
	if (o->jwks_document != NULL) {
		relay_sync_keys(r, o->jwks_document, o->jwks_length);
		if (r->synced_doc == NULL) {
			rc = sp_diag_set(diag, SP_ERR_INVALID,
			                 "relay: the controller's key set does not parse");
			goto fail;
		}
	}
	struct sockaddr_storage ss;
	int sslen = 0;
	if ((rc = resolve(o->listen, &ss, &sslen, diag)) < 0)
		goto fail;
	rc = SP_ERR_IO;
	r->base = event_base_new();
	if (r->base == NULL || pipe2(r->wake_pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		sp_diag_set(diag, rc, "relay: cannot create its event loop");
		goto fail;
	}
	r->wake = event_new(r->base, r->wake_pipe[0], EV_READ | EV_PERSIST, on_wake, r);
	if (r->wake == NULL || event_add(r->wake, NULL) < 0) {
		sp_diag_set(diag, rc, "relay: cannot create its event loop");
		goto fail;
	}
	r->listener = evconnlistener_new_bind(r->base, on_accept, r,
	                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
	                                          LEV_OPT_CLOSE_ON_EXEC,
	                                      1024, (struct sockaddr *)&ss, sslen);
	if (r->listener == NULL) {
		sp_diag_set(diag, rc, "relay: cannot listen on %s: %s", o->listen, strerror(errno));
		goto fail;
	}
	r->resume = evtimer_new(r->base, on_resume, r);
	if (r->resume == NULL) {
		sp_diag_set(diag, rc, "relay: cannot create its event loop");
		goto fail;
	}
	evconnlistener_set_error_cb(r->listener, on_accept_error);
	/* Each relayed connection holds six descriptors (two sockets, two pipes): take the
	 * hard limit rather than the usual soft 1024. */
	struct rlimit nofile;
	if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
		nofile.rlim_cur = nofile.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &nofile);
	}
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	if (getsockname(evconnlistener_get_fd(r->listener), (struct sockaddr *)&bound, &blen) == 0)
		r->port = ntohs(bound.ss_family == AF_INET6
		                    ? ((struct sockaddr_in6 *)(void *)&bound)->sin6_port
		                    : ((struct sockaddr_in *)(void *)&bound)->sin_port);
	if (pthread_create(&r->thread, NULL, relay_thread, r) != 0) {
		sp_diag_set(diag, rc, "relay: cannot start its thread");
		goto fail;
	}
	r->thread_started = 1;
	*out = r;
	return 0;
fail:
	relay_destroy(r);
	return rc;
}

uint16_t relay_port(const struct relay *r)
{
	return r != NULL ? r->port : 0;
}

void relay_stop(struct relay *r)
{
	if (r == NULL || !r->thread_started)
		return;
	char b = 1;
	if (write(r->wake_pipe[1], &b, 1) != 1)
		SP_LOG_MSG(SP_LOG_WARN, "relay: cannot wake its thread");
	pthread_join(r->thread, NULL);
	r->thread_started = 0;
	relay_close_all(r);
}

void relay_free(struct relay *r)
{
	if (r == NULL)
		return;
	relay_stop(r);
	relay_destroy(r);
}
