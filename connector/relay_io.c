/*
 * connector/relay_io.c — see relay_io.h.
 *
 * Objects (all on the loop thread):
 *   struct relay_link  one slot per listed relay: its control connection (a bufferevent,
 *                      NULL while waiting to reconnect), its retry timer and parser.
 *   struct relay_dial  one data connection being opened for a dial; on success its socket
 *                      goes to the adopt callback and the struct is freed.
 */
#include "connector/relay_io.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "connector/relay_link.h"
#include "shared/log.h"
#include "shared/wire.h"

/* Data connections being opened at once; dials past this are counted as failed. */
#define RELAY_DIALS_MAX 256
/* Keepalive on the control connection: a relay that vanished is noticed within ~60 s. */
#define RELAY_KEEPIDLE_S 30
#define RELAY_KEEPINTVL_S 10
#define RELAY_KEEPCNT 3

struct connector_relays;

struct relay_link {
	struct connector_relays *owner;
	int used;
	struct connector_relay_addr addr;
	struct bufferevent *bev;
	struct event *retry_ev;
	struct connector_relay_parser parser;
	unsigned failures;
	int registered;
};

struct relay_dial {
	struct connector_relays *owner;
	int fd;
	struct event *ev;
	uint8_t hello[5 + SP_RELAY_PAIRING_ID_LEN];
	char peer[SP_CONFIG_HOST_MAX + 16];
	struct relay_dial *prev, *next;
};

struct connector_relays {
	struct event_base *base;
	struct connector_shared *shared;
	connector_relay_adopt_fn adopt;
	void *adopt_arg;
	char *token;
	int stopped;
	struct relay_link links[CONNECTOR_RELAY_MAX];
	struct relay_dial *dials;
	size_t dial_count;
	struct connector_relay_counters counters;
};

static void free_token(char *t)
{
	if (t != NULL) {
		OPENSSL_cleanse(t, strlen(t));
		free(t);
	}
}

/* ---- data connections ---- */

static void dial_free(struct relay_dial *dl)
{
	struct connector_relays *r = dl->owner;
	if (dl->prev != NULL)
		dl->prev->next = dl->next;
	else
		r->dials = dl->next;
	if (dl->next != NULL)
		dl->next->prev = dl->prev;
	r->dial_count--;
	if (dl->ev != NULL)
		event_free(dl->ev);
	if (dl->fd != -1)
		close(dl->fd);
	free(dl);
}

static void dial_fail(struct relay_dial *dl, const char *why)
{
	dl->owner->counters.dials_failed++;
	SP_LOG(SP_LOG_WARN, "relay dial not answered", SP_LOG_STR("relay", dl->peer),
	       SP_LOG_STR("why", why));
	dial_free(dl);
}

static void on_dial_ready(evutil_socket_t fd, short what, void *arg)
{
	struct relay_dial *dl = arg;
	if (what & EV_TIMEOUT) {
		dial_fail(dl, "connect timed out");
		return;
	}
	int err = 0;
	socklen_t elen = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == -1 || err != 0) {
		dial_fail(dl, strerror(err != 0 ? err : errno));
		return;
	}
	/* 21 bytes into a fresh socket's empty send buffer: all of it or an error. */
	ssize_t n = send(fd, dl->hello, sizeof(dl->hello), MSG_NOSIGNAL);
	if (n != (ssize_t)sizeof(dl->hello)) {
		dial_fail(dl, n == -1 ? strerror(errno) : "short send");
		return;
	}
	struct connector_relays *r = dl->owner;
	char peer[sizeof(dl->peer)];
	memcpy(peer, dl->peer, sizeof(peer));
	dl->fd = -1;
	dial_free(dl);
	r->counters.dials++;
	r->adopt(r->adopt_arg, fd, peer);
}

static void dial_start(struct relay_link *link, const uint8_t pairing_id[SP_RELAY_PAIRING_ID_LEN])
{
	struct connector_relays *r = link->owner;
	if (r->stopped || r->dial_count >= RELAY_DIALS_MAX) {
		r->counters.dials_failed++;
		SP_LOG(SP_LOG_WARN, "relay dial refused", SP_LOG_STR("relay", link->addr.text),
		       SP_LOG_STR("why", r->stopped ? "draining" : "too many dials pending"));
		return;
	}
	struct relay_dial *dl = calloc(1, sizeof(*dl));
	if (dl == NULL) {
		r->counters.dials_failed++;
		return;
	}
	dl->owner = r;
	dl->fd = -1;
	snprintf(dl->peer, sizeof(dl->peer), "relay %s", link->addr.text);
	dl->next = r->dials;
	if (r->dials != NULL)
		r->dials->prev = dl;
	r->dials = dl;
	r->dial_count++;
	struct sp_buf hello;
	sp_buf_init_fixed(&hello, dl->hello, sizeof(dl->hello));
	if (sp_relay_connector_hello_encode(pairing_id, &hello) < 0 ||
	    hello.len != sizeof(dl->hello)) {
		dial_fail(dl, "cannot encode the preamble");
		return;
	}
	dl->fd = socket(link->addr.sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (dl->fd == -1) {
		dial_fail(dl, strerror(errno));
		return;
	}
	if (connect(dl->fd, (struct sockaddr *)&link->addr.sa, link->addr.sa_len) == -1 &&
	    errno != EINPROGRESS) {
		dial_fail(dl, strerror(errno));
		return;
	}
	dl->ev = event_new(r->base, dl->fd, EV_WRITE, on_dial_ready, dl);
	struct timeval tv = {CONNECTOR_RELAY_DIAL_TIMEOUT_MS / 1000,
			     (CONNECTOR_RELAY_DIAL_TIMEOUT_MS % 1000) * 1000};
	if (dl->ev == NULL || event_add(dl->ev, &tv) < 0)
		dial_fail(dl, "out of memory");
}

/* ---- control connections ---- */

static void link_connect(struct relay_link *link);

static void link_close(struct relay_link *link)
{
	if (link->bev != NULL) {
		bufferevent_free(link->bev);
		link->bev = NULL;
	}
	if (link->registered) {
		link->registered = 0;
		link->owner->counters.registered--;
	}
}

static void link_fail(struct relay_link *link, const char *why)
{
	struct connector_relays *r = link->owner;
	link_close(link);
	link->failures++;
	uint32_t rnd = 0;
	(void)RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
	int64_t ms = connector_relay_backoff_ms(link->failures, rnd);
	SP_LOG(SP_LOG_WARN, "relay connection lost", SP_LOG_STR("relay", link->addr.text),
	       SP_LOG_STR("why", why), SP_LOG_INT("retry_ms", ms));
	if (r->stopped)
		return;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
	event_add(link->retry_ev, &tv);
}

static void on_link_read(struct bufferevent *bev, void *arg)
{
	struct relay_link *link = arg;
	struct connector_relays *r = link->owner;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		size_t len = evbuffer_get_length(in);
		if (len == 0)
			return;
		size_t want = len < SP_RELAY_DIAL_LEN ? len : SP_RELAY_DIAL_LEN;
		const uint8_t *data = evbuffer_pullup(in, (ev_ssize_t)want);
		struct connector_relay_event ev;
		int n = connector_relay_parse(&link->parser, data, want, &ev);
		if (n == SP_ERR_AGAIN)
			return;
		if (n < 0) {
			link_fail(link, "unexpected bytes from the relay");
			return;
		}
		evbuffer_drain(in, (size_t)n);
		switch (ev.kind) {
		case CONNECTOR_RELAY_EV_REGISTERED:
			/* registered: the connection idles (keepalive notices a lost relay) */
			bufferevent_set_timeouts(bev, NULL, NULL);
			link->registered = 1;
			link->failures = 0;
			r->counters.registrations++;
			r->counters.registered++;
			SP_LOG(SP_LOG_INFO, "registered at the relay",
			       SP_LOG_STR("relay", link->addr.text));
			break;
		case CONNECTOR_RELAY_EV_REFUSED:
			r->counters.refusals++;
			if (ev.status == SP_RELAY_BAD_TICKET || ev.status == SP_RELAY_EXPIRED)
				connector_shared_relay_token_refused(r->shared);
			link_fail(link, sp_relay_status_name(ev.status));
			return;
		case CONNECTOR_RELAY_EV_DIAL:
			dial_start(link, ev.pairing_id);
			break;
		}
	}
}

static void on_link_event(struct bufferevent *bev, short what, void *arg)
{
	struct relay_link *link = arg;
	if (what & BEV_EVENT_CONNECTED) {
		evutil_socket_t fd = bufferevent_getfd(bev);
		int one = 1, idle = RELAY_KEEPIDLE_S, intvl = RELAY_KEEPINTVL_S,
		    cnt = RELAY_KEEPCNT;
		(void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		(void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
		return;
	}
	link_fail(link, (what & BEV_EVENT_TIMEOUT) ? "no answer from the relay in time"
			: (what & BEV_EVENT_EOF)
			    ? "closed by the relay"
			    : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

static void on_link_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	link_connect(arg);
}

static void link_connect(struct relay_link *link)
{
	struct connector_relays *r = link->owner;
	if (r->stopped || r->token == NULL || link->bev != NULL || link->addr.sa_len == 0)
		return;
	event_del(link->retry_ev);
	connector_relay_parser_reset(&link->parser);
	link->bev = bufferevent_socket_new(r->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (link->bev == NULL) {
		link_fail(link, "out of memory");
		return;
	}
	bufferevent_setcb(link->bev, on_link_read, NULL, on_link_event, link);
	/* connect and status byte within the timeout (cleared once registered) */
	struct timeval tv = {CONNECTOR_RELAY_REGISTER_TIMEOUT_MS / 1000,
			     (CONNECTOR_RELAY_REGISTER_TIMEOUT_MS % 1000) * 1000};
	bufferevent_set_timeouts(link->bev, &tv, NULL);
	struct sp_buf hello;
	sp_buf_init(&hello, 16 + SP_RELAY_TOKEN_MAX);
	int rc = sp_relay_register_encode((const uint8_t *)r->token, strlen(r->token), &hello);
	if (rc == 0)
		rc = bufferevent_write(link->bev, hello.data, hello.len) == 0 ? 0 : SP_ERR_NOMEM;
	sp_buf_free_secret(&hello);
	if (rc < 0) {
		link_fail(link, "cannot build the preamble");
		return;
	}
	bufferevent_enable(link->bev, EV_READ);
	if (bufferevent_socket_connect(link->bev, (struct sockaddr *)&link->addr.sa,
				       (int)link->addr.sa_len) < 0) {
		/* the bufferevent may already be gone through on_link_event */
		if (link->bev != NULL)
			link_fail(link, "cannot connect");
	}
}

/* ---- the set ---- */

int connector_relays_new(struct event_base *base, struct connector_shared *shared,
			 connector_relay_adopt_fn adopt, void *arg, struct connector_relays **out)
{
	*out = NULL;
	struct connector_relays *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return SP_ERR_NOMEM;
	r->base = base;
	r->shared = shared;
	r->adopt = adopt;
	r->adopt_arg = arg;
	for (size_t i = 0; i < CONNECTOR_RELAY_MAX; i++) {
		r->links[i].owner = r;
		r->links[i].retry_ev = evtimer_new(base, on_link_retry, &r->links[i]);
		if (r->links[i].retry_ev == NULL) {
			connector_relays_free(r);
			return SP_ERR_NOMEM;
		}
	}
	*out = r;
	return 0;
}

void connector_relays_update(struct connector_relays *r)
{
	char *token = NULL;
	struct connector_relay_addr list[CONNECTOR_RELAY_MAX];
	size_t count = 0;
	if (r->stopped || connector_shared_relay_get(r->shared, &token, list, &count) < 0)
		return;
	free_token(r->token);
	r->token = token;
	/* drop relays no longer listed */
	for (size_t i = 0; i < CONNECTOR_RELAY_MAX; i++) {
		struct relay_link *link = &r->links[i];
		if (!link->used)
			continue;
		int listed = 0;
		for (size_t k = 0; k < count && !listed; k++)
			listed = strcmp(list[k].text, link->addr.text) == 0;
		if (!listed) {
			SP_LOG(SP_LOG_INFO, "relay no longer listed",
			       SP_LOG_STR("relay", link->addr.text));
			link_close(link);
			event_del(link->retry_ev);
			link->used = 0;
			link->failures = 0;
		}
	}
	/* add new ones, and connect every idle one */
	for (size_t k = 0; k < count; k++) {
		struct relay_link *link = NULL;
		for (size_t i = 0; i < CONNECTOR_RELAY_MAX && link == NULL; i++)
			if (r->links[i].used && strcmp(r->links[i].addr.text, list[k].text) == 0)
				link = &r->links[i];
		for (size_t i = 0; i < CONNECTOR_RELAY_MAX && link == NULL; i++)
			if (!r->links[i].used) {
				link = &r->links[i];
				link->used = 1;
			}
		if (link == NULL)
			break;
		if (link->bev == NULL)
			link->addr =
			    list[k]; /* a re-resolved address applies at the next connect */
		if (link->bev == NULL && !event_pending(link->retry_ev, EV_TIMEOUT, NULL))
			link_connect(link);
	}
}

void connector_relays_stop(struct connector_relays *r)
{
	if (r == NULL)
		return;
	r->stopped = 1;
	for (size_t i = 0; i < CONNECTOR_RELAY_MAX; i++) {
		link_close(&r->links[i]);
		if (r->links[i].retry_ev != NULL)
			event_del(r->links[i].retry_ev);
	}
	while (r->dials != NULL)
		dial_free(r->dials);
}

const struct connector_relay_counters *connector_relays_counters(const struct connector_relays *r)
{
	return &r->counters;
}

void connector_relays_free(struct connector_relays *r)
{
	if (r == NULL)
		return;
	connector_relays_stop(r);
	for (size_t i = 0; i < CONNECTOR_RELAY_MAX; i++)
		if (r->links[i].retry_ev != NULL)
			event_free(r->links[i].retry_ev);
	free_token(r->token);
	free(r);
}
