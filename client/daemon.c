/*
 * client/daemon.c — the client daemon (see daemon.h).
 *
 * Ownership: struct daemon lives on daemon_run's stack frame (heap parts freed before it
 * returns). Flows and tunnels are heap objects in doubly linked lists; closing one
 * detaches it at once and frees it later from the reaper event, so no callback ever sees
 * freed memory (tunnel callbacks fire synchronously inside sp_tunnel_tls_recv/flush).
 */
#include "client/daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "client/api.h"
#include "client/control_proto.h"
#include "client/dns_stub.h"
#include "client/grant_cache.h"
#include "client/loopback.h"
#include "client/proxy_parse.h"
#include "client/resource_list.h"
#include "client/state.h"
#include "client/synthetic.h"
#include "shared/config.h"
#include "shared/jwk.h"
#include "shared/keys.h"
#include "shared/log.h"
#include "shared/resource_index.h"
#include "shared/tls.h"
#include "shared/tunnel.h"
#include "shared/tunnel_tls.h"

#define DENIALS_MAX 32
#define CONNECTOR_BACKOFF_MAX_S 30
#define LOCAL_OUT_HIGH (1024 * 1024)
#define MAX_FLOWS 4096
#define ID_MAX 64

enum flow_kind { FLOW_LOOPBACK = 1, FLOW_SOCKS, FLOW_HTTP };
enum flow_state { F_SOCKS_GREETING = 1, F_SOCKS_REQUEST, F_HTTP_REQUEST, F_OPENING, F_OPEN };

struct daemon;

struct tunnel {
	struct daemon *d;
	char connector_id[ID_MAX + 1];
	char connector_name[ID_MAX + 1];
	char network_id[ID_MAX + 1];
	char address[300];
	int fd;
	int tcp_connected;
	int handshake_done;
	int dead;
	struct event *ev_read, *ev_write;
	struct event *ev_kick; /* runs tunnel_pump outside tunnel callbacks */
	SSL *ssl;
	struct sp_tunnel *t;
	struct sp_tunnel_tls *tt;
	int64_t started;
	struct tunnel *prev, *next;
};

struct flow {
	struct daemon *d;
	enum flow_kind kind;
	enum flow_state state;
	struct bufferevent *bev;
	struct tunnel *tn;
	int32_t stream;
	char host[PROXY_HOST_MAX + 1];
	uint16_t port;
	char resource_id[ID_MAX + 1];
	char network_id[ID_MAX + 1];
	size_t unconsumed;
	int remote_end;
	int stream_closed;
	int read_blocked;
	int dead;
	unsigned attempts;
	int waiting_grant; /* a grant for resource_id is being fetched */
	uint64_t up, down;
	struct flow *prev, *next;
};

struct listener {
	struct daemon *d;
	struct evconnlistener *l;
	enum flow_kind kind;
	char name[256];
	char addr_text[64];
	uint16_t port;
	struct listener *next;
};

struct denial {
	int64_t time;
	char target[PROXY_HOST_MAX + 8];
	char resource_id[ID_MAX + 1];
	char reason[48];
	char origin[16];
};

/* A grant the loop asks the grant thread for (heap; the thread frees it). */
struct grant_request {
	char resource_id[ID_MAX + 1];
	struct grant_request *next;
};

/* The grant thread's answer (heap; the loop frees it): a grant or a refusal reason. */
struct grant_result {
	char resource_id[ID_MAX + 1];
	char *grant;
	int64_t expires_at;
	char reason[48];
	char origin[16];
	struct grant_result *next;
};

struct connector_health {
	char id[ID_MAX + 1];
	int64_t retry_at;
	int64_t backoff;
};

struct daemon {
	const struct daemon_options *o;
	struct event_base *base;
	json_t *session;
	char controller[1024];
	char device_id[ID_MAX + 1];
	EVP_PKEY *key;
	SSL_CTX *tls_ctx;
	/* shared with the controller thread */
	pthread_mutex_t lock;
	char *access;
	int64_t access_exp;
	json_t *pending_claims;
	char ctl_error[256];
	volatile int stop;
	int notify[2];
	struct event *ev_notify, *ev_reaper, *ev_sigterm, *ev_sigint;
	/* loop thread only */
	json_t *claims;
	struct sp_resource *resources;
	size_t nres;
	struct sp_resource_index *index;
	struct grant_cache grants;
	struct tunnel *tunnels;
	struct flow *flows, *zombies;
	struct tunnel *dead_tunnels;
	size_t flows_active;
	uint64_t flows_total, flows_refused;
	struct denial denials[DENIALS_MAX];
	size_t denials_count, denials_next;
	struct connector_health health[64];
	size_t health_count;
	struct listener *listeners;
	struct loopback *lb;
	struct dns_stub *stub; /* loopback mode with --dns: names answered with our addresses */
	size_t ports_all;
	struct evconnlistener *control;
	struct bufferevent *control_conns[16]; /* open control connections (freed at exit) */
	char control_path[STATE_PATH_MAX];
	pthread_t ctl_thread;
	int ctl_started;
	/* grant fetches (worker thread), both lists under lock */
	struct grant_request *grant_queue;
	struct grant_result *grant_results;
	pthread_cond_t grant_cond;
	pthread_t grant_thread;
	int grant_started;
};

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* ---------- denials ---------- */

static void record_denial(struct daemon *d, const struct flow *f, const char *reason,
			  const char *origin)
{
	struct denial *x = &d->denials[d->denials_next];
	memset(x, 0, sizeof(*x));
	x->time = now_s();
	snprintf(x->target, sizeof(x->target), "%s:%u", f->host, f->port);
	snprintf(x->resource_id, sizeof(x->resource_id), "%s", f->resource_id);
	snprintf(x->reason, sizeof(x->reason), "%s", reason);
	snprintf(x->origin, sizeof(x->origin), "%s", origin);
	d->denials_next = (d->denials_next + 1) % DENIALS_MAX;
	if (d->denials_count < DENIALS_MAX)
		d->denials_count++;
	d->flows_refused++;
	SP_LOG(SP_LOG_INFO, "flow refused", SP_LOG_STR("target", x->target),
	       SP_LOG_STR("reason", reason), SP_LOG_STR("by", origin));
}

/* ---------- flows: closing ---------- */

static void tunnel_kick(struct tunnel *tn);

static void reaper_schedule(struct daemon *d)
{
	event_active(d->ev_reaper, EV_TIMEOUT, 0);
}

static void flow_close(struct flow *f, int rst)
{
	if (f->dead)
		return;
	struct daemon *d = f->d;
	f->dead = 1;
	if (f->tn != NULL && !f->stream_closed && f->stream > 0) {
		sp_tunnel_set_stream_user(f->tn->t, f->stream, NULL);
		sp_tunnel_reset(f->tn->t, f->stream, SP_TUNNEL_CANCEL);
		tunnel_kick(f->tn);
	}
	if (f->bev != NULL) {
		evutil_socket_t fd = bufferevent_getfd(f->bev);
		if (rst && fd >= 0) {
			struct linger lg = {.l_onoff = 1, .l_linger = 0};
			(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		}
		bufferevent_free(f->bev);
		f->bev = NULL;
	}
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		d->flows = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	f->prev = NULL;
	f->next = d->zombies;
	d->zombies = f;
	d->flows_active--;
	reaper_schedule(d);
}

static void tunnel_pump(struct tunnel *tn);
static void flow_local_read(struct bufferevent *bev, void *arg);

/*
 * Asks the loop to flush the tunnel soon. Everything outside the tunnel's own socket
 * handlers uses this instead of tunnel_pump: tunnel callbacks must not call
 * sp_tunnel_send (which the flush does), and many paths run inside them.
 */
static void tunnel_kick(struct tunnel *tn)
{
	if (tn != NULL && !tn->dead)
		event_active(tn->ev_kick, EV_TIMEOUT, 0);
}

/* ---------- tunnel callbacks ---------- */

static struct flow *stream_flow(struct sp_tunnel *t, int32_t stream)
{
	return sp_tunnel_stream_user(t, stream);
}

static void socks_reply(struct flow *f, uint8_t code)
{
	uint8_t r[10] = {5, code, 0, 1, 0, 0, 0, 0, 0, 0};
	bufferevent_write(f->bev, r, sizeof(r));
}

static void http_reply_refused(struct flow *f, int status, const char *reason, const char *text)
{
	char msg[600];
	int n = snprintf(msg, sizeof(msg),
			 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
			 "sallyport-reason: %s\r\n\r\nsallyport: %s\n",
			 status, status == 403 ? "Forbidden" : "Bad Gateway", reason, text);
	if (n > 0)
		bufferevent_write(f->bev, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}

static void flow_finish_after_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	flow_close(arg, 0);
}

/* Refuses the local side: proxies answer with an error, loopback connections get a RST. */
static void flow_refuse(struct flow *f, const char *reason, const char *origin, const char *text)
{
	record_denial(f->d, f, reason, origin);
	if (f->kind == FLOW_LOOPBACK) {
		flow_close(f, 1);
		return;
	}
	if (f->kind == FLOW_SOCKS)
		socks_reply(f, strcmp(reason, "connect_failed") == 0 ||
					   strcmp(reason, "dns_error") == 0 ||
					   strcmp(reason, "connector_unavailable") == 0
				   ? SOCKS5_REPLY_HOST_UNREACHABLE
				   : SOCKS5_REPLY_NOT_ALLOWED);
	else
		http_reply_refused(f, strcmp(reason, "connect_failed") == 0 ? 502 : 403, reason, text);
	if (f->tn != NULL && !f->stream_closed && f->stream > 0) {
		sp_tunnel_set_stream_user(f->tn->t, f->stream, NULL);
		f->stream_closed = 1;
	}
	bufferevent_disable(f->bev, EV_READ);
	bufferevent_setcb(f->bev, NULL, flow_finish_after_write, NULL, f);
	f->state = F_OPENING;
}

static void on_open_result(struct sp_tunnel *t, int32_t stream, int status,
			   enum sp_tunnel_reason reason, void *user)
{
	(void)user;
	struct flow *f = stream_flow(t, stream);
	if (f == NULL || f->dead)
		return;
	if (status != 200) {
		f->stream_closed = 1; /* the tunnel resets its side itself */
		sp_tunnel_set_stream_user(t, stream, NULL);
		flow_refuse(f, sp_tunnel_reason_name(reason), "connector", "refused by the connector");
		return;
	}
	f->state = F_OPEN;
	if (f->kind == FLOW_SOCKS)
		socks_reply(f, SOCKS5_REPLY_OK);
	else if (f->kind == FLOW_HTTP)
		bufferevent_write(f->bev, "HTTP/1.1 200 Connection established\r\n\r\n", 39);
	bufferevent_enable(f->bev, EV_READ);
	if (evbuffer_get_length(bufferevent_get_input(f->bev)) > 0)
		flow_local_read(f->bev, f);
}

static void on_data(struct sp_tunnel *t, int32_t stream, const uint8_t *data, size_t len,
		    void *user)
{
	(void)user;
	struct flow *f = stream_flow(t, stream);
	if (f == NULL || f->dead) {
		sp_tunnel_consumed(t, stream, len);
		return;
	}
	bufferevent_write(f->bev, data, len);
	f->down += len;
	f->unconsumed += len;
	if (evbuffer_get_length(bufferevent_get_output(f->bev)) < LOCAL_OUT_HIGH) {
		sp_tunnel_consumed(t, stream, f->unconsumed);
		f->unconsumed = 0;
	}
}

static void on_remote_end(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)user;
	struct flow *f = stream_flow(t, stream);
	if (f == NULL || f->dead)
		return;
	f->remote_end = 1;
	if (evbuffer_get_length(bufferevent_get_output(f->bev)) == 0)
		shutdown(bufferevent_getfd(f->bev), SHUT_WR);
}

static void on_writable(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)user;
	struct flow *f = stream_flow(t, stream);
	if (f == NULL || f->dead || !f->read_blocked)
		return;
	f->read_blocked = 0;
	bufferevent_enable(f->bev, EV_READ);
	bufferevent_trigger(f->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
}

static void on_closed(struct sp_tunnel *t, int32_t stream, uint32_t code, void *user)
{
	(void)user;
	struct flow *f = stream_flow(t, stream);
	if (f == NULL || f->dead)
		return;
	f->stream_closed = 1;
	if (code != 0 || f->state != F_OPEN) {
		flow_close(f, f->kind == FLOW_LOOPBACK || f->state == F_OPEN);
		return;
	}
	if (evbuffer_get_length(bufferevent_get_output(f->bev)) == 0)
		flow_close(f, 0);
	/* else the write callback closes once the output has drained */
}

static const struct sp_tunnel_callbacks tunnel_cb = {
    .on_open_result = on_open_result,
    .on_data = on_data,
    .on_remote_end = on_remote_end,
    .on_writable = on_writable,
    .on_closed = on_closed,
};

/* ---------- connectors and tunnels ---------- */

static struct connector_health *health_of(struct daemon *d, const char *id)
{
	for (size_t i = 0; i < d->health_count; i++)
		if (strcmp(d->health[i].id, id) == 0)
			return &d->health[i];
	if (d->health_count == sizeof(d->health) / sizeof(d->health[0]))
		return &d->health[0];
	struct connector_health *h = &d->health[d->health_count++];
	memset(h, 0, sizeof(*h));
	snprintf(h->id, sizeof(h->id), "%s", id);
	return h;
}

static void flow_dispatch(struct flow *f);

static void tunnel_fail(struct tunnel *tn, const char *why)
{
	if (tn->dead)
		return;
	struct daemon *d = tn->d;
	tn->dead = 1;
	SP_LOG(SP_LOG_WARN, "tunnel closed", SP_LOG_STR("connector", tn->connector_name),
	       SP_LOG_STR("address", tn->address), SP_LOG_STR("why", why));
	if (!tn->handshake_done) {
		struct connector_health *h = health_of(d, tn->connector_id);
		h->backoff = h->backoff == 0 ? 1 : h->backoff * 2;
		if (h->backoff > CONNECTOR_BACKOFF_MAX_S)
			h->backoff = CONNECTOR_BACKOFF_MAX_S;
		h->retry_at = now_s() + h->backoff;
	}
	event_del(tn->ev_read);
	event_del(tn->ev_write);
	event_del(tn->ev_kick);
	if (tn->prev != NULL)
		tn->prev->next = tn->next;
	else
		d->tunnels = tn->next;
	if (tn->next != NULL)
		tn->next->prev = tn->prev;
	tn->prev = NULL;
	tn->next = d->dead_tunnels;
	d->dead_tunnels = tn;
	reaper_schedule(d);
	/* flows on it: unanswered ones try another connector (failover), open ones are cut */
	for (struct flow *f = d->flows, *next; f != NULL; f = next) {
		next = f->next;
		if (f->tn != tn)
			continue;
		f->tn = NULL;
		f->stream = 0;
		if (f->state == F_OPENING && !tn->handshake_done)
			flow_dispatch(f);
		else
			flow_close(f, 1);
	}
}

static void tunnel_pump(struct tunnel *tn)
{
	if (tn->dead || !tn->tcp_connected)
		return;
	struct sp_diag diag = {{0}};
	for (;;) {
		if (sp_tunnel_tls_flush(tn->tt, &diag) < 0) {
			tunnel_fail(tn, diag.message);
			return;
		}
		const uint8_t *data = NULL;
		size_t len = 0;
		sp_tunnel_tls_outbound_view(tn->tt, &data, &len);
		if (len == 0) {
			event_del(tn->ev_write);
			return;
		}
		ssize_t n = send(tn->fd, data, len, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			event_add(tn->ev_write, NULL);
			return;
		}
		if (n == -1) {
			tunnel_fail(tn, strerror(errno));
			return;
		}
		sp_tunnel_tls_outbound_consume(tn->tt, (size_t)n);
	}
}

static void tunnel_on_read(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct tunnel *tn = arg;
	uint8_t buf[64 * 1024];
	struct sp_diag diag = {{0}};
	for (int rounds = 0; rounds < 16 && !tn->dead; rounds++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			tunnel_fail(tn, n == 0 ? "closed by the connector" : strerror(errno));
			return;
		}
		size_t off = 0;
		while (off < (size_t)n && !tn->dead) {
			size_t used = 0;
			if (sp_tunnel_tls_recv(tn->tt, buf + off, (size_t)n - off, &used, &diag) < 0) {
				tunnel_pump(tn);
				tunnel_fail(tn, diag.message);
				return;
			}
			off += used;
			if (!tn->handshake_done && sp_tunnel_tls_handshake_done(tn->tt)) {
				tn->handshake_done = 1;
				health_of(tn->d, tn->connector_id)->backoff = 0;
				SP_LOG(SP_LOG_INFO, "tunnel up",
				       SP_LOG_STR("connector", tn->connector_name),
				       SP_LOG_STR("address", tn->address));
			}
			tunnel_pump(tn);
		}
	}
	if (!tn->dead && sp_tunnel_is_done(tn->t))
		tunnel_fail(tn, "drained");
}

static void tunnel_on_write(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct tunnel *tn = arg;
	if (tn->dead)
		return;
	if (!tn->tcp_connected) {
		int err = 0;
		socklen_t elen = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == -1 || err != 0) {
			tunnel_fail(tn, strerror(err != 0 ? err : errno));
			return;
		}
		tn->tcp_connected = 1;
		event_add(tn->ev_read, NULL);
	}
	tunnel_pump(tn);
}

static void tunnel_on_kick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct tunnel *tn = arg;
	if (!tn->dead && tn->tcp_connected)
		tunnel_pump(tn);
}

static int hex_pin(const char *hex, uint8_t out[SP_KEY_SPKI_DIGEST_LEN])
{
	if (hex == NULL || strlen(hex) != 2 * SP_KEY_SPKI_DIGEST_LEN)
		return -1;
	for (size_t i = 0; i < SP_KEY_SPKI_DIGEST_LEN; i++) {
		int v = 0;
		for (int k = 0; k < 2; k++) {
			char c = hex[2 * i + (size_t)k];
			int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
			if (x < 0)
				return -1;
			v = v * 16 + x;
		}
		out[i] = (uint8_t)v;
	}
	return 0;
}

static struct tunnel *tunnel_new(struct daemon *d, const char *network_id, json_t *conn)
{
	const char *id = json_string_value(json_object_get(conn, "id"));
	const char *name = json_string_value(json_object_get(conn, "name"));
	const char *addr = json_string_value(json_object_get(conn, "direct_address"));
	const char *digest = json_string_value(json_object_get(conn, "public_key_digest"));
	uint8_t pin[SP_KEY_SPKI_DIGEST_LEN];
	if (id == NULL || addr == NULL || hex_pin(digest, pin) < 0)
		return NULL;
	char host[256], port[8];
	const char *colon = strrchr(addr, ':');
	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) || strlen(colon + 1) >= 8)
		return NULL;
	const char *h = addr;
	size_t hlen = (size_t)(colon - addr);
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	snprintf(port, sizeof(port), "%s", colon + 1);
	struct tunnel *tn = calloc(1, sizeof(*tn));
	if (tn == NULL)
		return NULL;
	tn->d = d;
	tn->fd = -1;
	snprintf(tn->connector_id, sizeof(tn->connector_id), "%s", id);
	snprintf(tn->connector_name, sizeof(tn->connector_name), "%s", name != NULL ? name : id);
	snprintf(tn->network_id, sizeof(tn->network_id), "%s", network_id);
	snprintf(tn->address, sizeof(tn->address), "%s", addr);
	tn->started = now_s();
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
		goto fail;
	tn->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (tn->fd == -1)
		goto fail;
	int one = 1;
	(void)setsockopt(tn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(tn->fd, res->ai_addr, res->ai_addrlen) == -1 && errno != EINPROGRESS)
		goto fail;
	freeaddrinfo(res);
	res = NULL;
	if (sp_tls_conn_new_memory(d->tls_ctx, &tn->ssl) < 0 ||
	    sp_tls_set_expected_peer(tn->ssl, pin) < 0 ||
	    sp_tunnel_new(SP_TUNNEL_CLIENT, &tunnel_cb, tn, NULL, &tn->t) < 0 ||
	    sp_tunnel_tls_new(tn->ssl, tn->t, &tn->tt) < 0)
		goto fail;
	tn->ev_read = event_new(d->base, tn->fd, EV_READ | EV_PERSIST, tunnel_on_read, tn);
	tn->ev_write = event_new(d->base, tn->fd, EV_WRITE | EV_PERSIST, tunnel_on_write, tn);
	tn->ev_kick = event_new(d->base, -1, 0, tunnel_on_kick, tn);
	if (tn->ev_read == NULL || tn->ev_write == NULL || tn->ev_kick == NULL)
		goto fail;
	event_add(tn->ev_write, NULL);
	tn->next = d->tunnels;
	if (d->tunnels != NULL)
		d->tunnels->prev = tn;
	d->tunnels = tn;
	SP_LOG(SP_LOG_INFO, "tunnel connecting", SP_LOG_STR("connector", tn->connector_name),
	       SP_LOG_STR("address", tn->address));
	return tn;
fail:
	if (res != NULL)
		freeaddrinfo(res);
	struct connector_health *hh = health_of(d, id);
	hh->backoff = hh->backoff == 0 ? 1 : hh->backoff * 2;
	if (hh->backoff > CONNECTOR_BACKOFF_MAX_S)
		hh->backoff = CONNECTOR_BACKOFF_MAX_S;
	hh->retry_at = now_s() + hh->backoff;
	if (tn->ev_read != NULL)
		event_free(tn->ev_read);
	if (tn->ev_write != NULL)
		event_free(tn->ev_write);
	if (tn->ev_kick != NULL)
		event_free(tn->ev_kick);
	sp_tunnel_tls_free(tn->tt);
	sp_tunnel_free(tn->t);
	SSL_free(tn->ssl);
	if (tn->fd != -1)
		close(tn->fd);
	free(tn);
	return NULL;
}

static void tunnel_free(struct tunnel *tn)
{
	event_free(tn->ev_read);
	event_free(tn->ev_write);
	event_free(tn->ev_kick);
	sp_tunnel_tls_free(tn->tt);
	sp_tunnel_free(tn->t);
	SSL_free(tn->ssl);
	close(tn->fd);
	free(tn);
}

/* A live tunnel to a connector of the network, making one when none is open. */
static struct tunnel *tunnel_for(struct daemon *d, const char *network_id)
{
	for (struct tunnel *tn = d->tunnels; tn != NULL; tn = tn->next)
		if (!tn->dead && strcmp(tn->network_id, network_id) == 0 &&
		    !sp_tunnel_peer_going_away(tn->t) && sp_tunnel_can_open(tn->t))
			return tn;
	size_t i;
	json_t *net;
	json_array_foreach(json_object_get(d->claims, "networks"), i, net)
	{
		const char *nid = json_string_value(json_object_get(net, "id"));
		if (nid == NULL || strcmp(nid, network_id) != 0)
			continue;
		size_t k;
		json_t *conn;
		json_array_foreach(json_object_get(net, "connectors"), k, conn)
		{
			const char *cid = json_string_value(json_object_get(conn, "id"));
			if (cid == NULL || !json_is_string(json_object_get(conn, "direct_address")))
				continue;
			if (health_of(d, cid)->retry_at > now_s())
				continue;
			struct tunnel *tn = tunnel_new(d, network_id, conn);
			if (tn != NULL)
				return tn;
		}
	}
	return NULL;
}

/* ---------- flows: opening ---------- */

static char *access_token(struct daemon *d)
{
	pthread_mutex_lock(&d->lock);
	char *a = d->access != NULL ? strdup(d->access) : NULL;
	pthread_mutex_unlock(&d->lock);
	return a;
}

static void free_secret(char *s)
{
	if (s != NULL) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

static void notify_loop(struct daemon *d);

/* Grant thread: POST /api/client/v1/grants for each queued resource, one at a time. */
static void *grant_main(void *arg)
{
	struct daemon *d = arg;
	pthread_mutex_lock(&d->lock);
	while (!d->stop) {
		struct grant_request *rq = d->grant_queue;
		if (rq == NULL) {
			pthread_cond_wait(&d->grant_cond, &d->lock);
			continue;
		}
		d->grant_queue = rq->next;
		char *access = d->access != NULL ? strdup(d->access) : NULL;
		pthread_mutex_unlock(&d->lock);
		struct grant_result *res = calloc(1, sizeof(*res));
		if (res != NULL) {
			snprintf(res->resource_id, sizeof(res->resource_id), "%s", rq->resource_id);
			snprintf(res->origin, sizeof(res->origin), "controller");
			if (access == NULL) {
				snprintf(res->reason, sizeof(res->reason), "signed_out");
				snprintf(res->origin, sizeof(res->origin), "client");
			} else {
				char body[128];
				snprintf(body, sizeof(body), "{\"resource_id\":\"%s\"}", rq->resource_id);
				long status = 0;
				json_t *ans = NULL;
				struct sp_diag diag = {{0}};
				int rc = api_call(d->controller, "POST", "/api/client/v1/grants", body,
						  access, 10, &status, &ans, &diag);
				const char *g = json_string_value(json_object_get(ans, "grant"));
				if (rc == 0 && status == 200 && g != NULL) {
					res->grant = strdup(g);
					res->expires_at =
					    json_integer_value(json_object_get(ans, "expires_at"));
				}
				if (res->grant == NULL)
					snprintf(res->reason, sizeof(res->reason), "%s",
						 rc < 0 ? "controller_unreachable" : api_error_code(ans));
				json_decref(ans);
			}
		}
		if (access != NULL) {
			OPENSSL_cleanse(access, strlen(access));
			free(access);
		}
		free(rq);
		pthread_mutex_lock(&d->lock);
		if (res != NULL) {
			res->next = d->grant_results;
			d->grant_results = res;
		}
		pthread_mutex_unlock(&d->lock);
		notify_loop(d);
		pthread_mutex_lock(&d->lock);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

/* Asks the grant thread for the flow's grant, unless another flow already did. */
static void flow_wait_grant(struct flow *f)
{
	struct daemon *d = f->d;
	int asked = 0;
	for (struct flow *o = d->flows; o != NULL && !asked; o = o->next)
		asked = o != f && o->waiting_grant && strcmp(o->resource_id, f->resource_id) == 0;
	f->waiting_grant = 1;
	if (asked)
		return;
	struct grant_request *rq = calloc(1, sizeof(*rq));
	if (rq == NULL) {
		f->waiting_grant = 0;
		flow_refuse(f, "overloaded", "client", "out of memory");
		return;
	}
	snprintf(rq->resource_id, sizeof(rq->resource_id), "%s", f->resource_id);
	pthread_mutex_lock(&d->lock);
	struct grant_request **pp = &d->grant_queue;
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = rq;
	pthread_cond_signal(&d->grant_cond);
	pthread_mutex_unlock(&d->lock);
}

/*
 * Opens the flow's stream on a tunnel of its network (again, after a failover). Without a
 * cached grant the flow first waits for one (grant thread, see on_notify).
 */
static void flow_dispatch(struct flow *f)
{
	struct daemon *d = f->d;
	const char *grant = grant_cache_get(&d->grants, f->resource_id, now_s());
	if (grant == NULL) {
		flow_wait_grant(f);
		return;
	}
	if (++f->attempts > 4) {
		flow_refuse(f, "connector_unavailable", "client", "no connector reachable");
		return;
	}
	struct tunnel *tn = tunnel_for(d, f->network_id);
	if (tn == NULL) {
		flow_refuse(f, "connector_unavailable", "client", "no connector reachable");
		return;
	}
	char authority[PROXY_HOST_MAX + 16];
	if (strchr(f->host, ':') != NULL)
		snprintf(authority, sizeof(authority), "[%s]:%u", f->host, f->port);
	else
		snprintf(authority, sizeof(authority), "%s:%u", f->host, f->port);
	char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
	uint8_t rnd[16];
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		flow_close(f, 1);
		return;
	}
	for (size_t k = 0; k < sizeof(rnd); k++)
		snprintf(flow_id + 2 * k, 3, "%02x", rnd[k]);
	struct sp_tunnel_open_request req = {
	    .authority = authority, .proto = SP_TUNNEL_PROTO_TCP, .grant = grant, .flow_id = flow_id};
	struct sp_diag diag = {{0}};
	if (sp_tunnel_open(tn->t, &req, &f->stream, &diag) < 0) {
		flow_refuse(f, "bad_request", "client", diag.message);
		return;
	}
	f->tn = tn;
	f->state = F_OPENING;
	sp_tunnel_set_stream_user(tn->t, f->stream, f);
	d->flows_total++;
	tunnel_kick(tn);
}

/* Finds the resource for host:port and starts the flow, or refuses it. */
static void flow_start(struct flow *f)
{
	struct daemon *d = f->d;
	const struct sp_resource *res = NULL;
	enum sp_resource_reason reason = SP_RESOURCE_NO_RESOURCE;
	if (d->index != NULL)
		(void)sp_resource_index_match(d->index, f->host, SP_RESOURCE_PROTOCOL_TCP, f->port,
					      &res, &reason);
	if (res == NULL) {
		flow_refuse(f, "not_protected", "client",
			    "not a Sallyport resource (this proxy reaches protected resources only)");
		return;
	}
	json_t *item = json_array_get(json_object_get(d->claims, "resources"), (size_t)(res->id - 1));
	const char *rid = json_string_value(json_object_get(item, "id"));
	const char *nid = json_string_value(json_object_get(item, "network_id"));
	if (rid == NULL || nid == NULL) {
		flow_refuse(f, "not_protected", "client", "resource list inconsistent");
		return;
	}
	snprintf(f->resource_id, sizeof(f->resource_id), "%s", rid);
	snprintf(f->network_id, sizeof(f->network_id), "%s", nid);
	/* an alias is a local name only: the connector is given the resource's address */
	if (res->alias != NULL && strcasecmp(res->alias, f->host) == 0) {
		const struct sp_cidr *c = &res->address.cidr;
		if (res->address.kind == SP_RESOURCE_ADDRESS_NAME)
			snprintf(f->host, sizeof(f->host), "%s", res->address.name);
		else if (res->address.kind == SP_RESOURCE_ADDRESS_CIDR &&
			 c->prefix_len == (c->family == AF_INET ? 32 : 128))
			inet_ntop(c->family, c->addr, f->host, sizeof(f->host));
		else {
			flow_refuse(f, "no_destination", "client",
				    "the alias stands for a pattern or network, not one address");
			return;
		}
	}
	flow_dispatch(f);
}

/* ---------- local side ---------- */

static void flow_local_read(struct bufferevent *bev, void *arg)
{
	struct flow *f = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	if (f->dead)
		return;
	if (f->state == F_SOCKS_GREETING || f->state == F_SOCKS_REQUEST ||
	    f->state == F_HTTP_REQUEST) {
		size_t len = evbuffer_get_length(in);
		size_t take = len < PROXY_HTTP_REQUEST_MAX + 16 ? len : PROXY_HTTP_REQUEST_MAX + 16;
		const uint8_t *data = evbuffer_pullup(in, (ssize_t)take);
		size_t used = 0;
		if (f->state == F_SOCKS_GREETING) {
			int no_auth = 0;
			int rc = socks5_parse_greeting(data, take, &used, &no_auth);
			if (rc == SP_ERR_AGAIN)
				return;
			if (rc < 0 || !no_auth) {
				uint8_t r[2] = {5, 0xff};
				bufferevent_write(bev, r, 2);
				bufferevent_disable(bev, EV_READ);
				bufferevent_setcb(bev, NULL, flow_finish_after_write, NULL, f);
				return;
			}
			evbuffer_drain(in, used);
			uint8_t r[2] = {5, 0};
			bufferevent_write(bev, r, 2);
			f->state = F_SOCKS_REQUEST;
			flow_local_read(bev, arg);
			return;
		}
		struct proxy_target target;
		int rc;
		uint8_t code = SOCKS5_REPLY_GENERAL_FAILURE;
		if (f->state == F_SOCKS_REQUEST)
			rc = socks5_parse_request(data, take, &used, &target, &code);
		else
			rc = http_connect_parse(data, take, &used, &target);
		if (rc == SP_ERR_AGAIN)
			return;
		if (rc < 0) {
			snprintf(f->host, sizeof(f->host), "-");
			if (f->kind == FLOW_SOCKS)
				socks_reply(f, code);
			else
				http_reply_refused(f, rc == SP_ERR_UNSUPPORTED ? 405 : 400, "bad_request",
						   "only CONNECT host:port is served");
			bufferevent_disable(bev, EV_READ);
			bufferevent_setcb(bev, NULL, flow_finish_after_write, NULL, f);
			return;
		}
		evbuffer_drain(in, used);
		snprintf(f->host, sizeof(f->host), "%s", target.host);
		f->port = target.port;
		f->state = F_OPENING;
		bufferevent_disable(bev, EV_READ);
		flow_start(f);
		return;
	}
	if (f->tn == NULL || f->stream_closed)
		return;
	while (evbuffer_get_length(in) > 0) {
		size_t len = evbuffer_get_length(in);
		if (len > 65536)
			len = 65536;
		const uint8_t *data = evbuffer_pullup(in, (ssize_t)len);
		size_t accepted = 0;
		if (sp_tunnel_write(f->tn->t, f->stream, data, len, &accepted) < 0) {
			flow_close(f, 1);
			return;
		}
		evbuffer_drain(in, accepted);
		f->up += accepted;
		if (accepted < len) {
			f->read_blocked = 1;
			bufferevent_disable(bev, EV_READ);
			break;
		}
	}
	tunnel_kick(f->tn);
}

static void flow_local_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct flow *f = arg;
	if (f->dead)
		return;
	if (f->stream_closed && f->state == F_OPEN) {
		flow_close(f, 0);
		return;
	}
	if (f->tn != NULL && f->unconsumed > 0) {
		sp_tunnel_consumed(f->tn->t, f->stream, f->unconsumed);
		f->unconsumed = 0;
		tunnel_kick(f->tn);
	}
	if (f->remote_end)
		shutdown(bufferevent_getfd(f->bev), SHUT_WR);
}

static void flow_local_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	struct flow *f = arg;
	if (f->dead)
		return;
	if (what & BEV_EVENT_EOF) {
		if (f->tn != NULL && !f->stream_closed) {
			if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
				flow_local_read(bev, f);
			sp_tunnel_end(f->tn->t, f->stream);
			tunnel_kick(f->tn);
			bufferevent_disable(bev, EV_READ);
			return;
		}
		flow_close(f, 0);
		return;
	}
	if (what & BEV_EVENT_ERROR)
		flow_close(f, 1);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen,
		      void *arg)
{
	(void)l;
	(void)sa;
	(void)slen;
	struct listener *ls = arg;
	struct daemon *d = ls->d;
	if (d->flows_active >= MAX_FLOWS) {
		close(fd);
		return;
	}
	struct flow *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		close(fd);
		return;
	}
	f->d = d;
	f->kind = ls->kind;
	f->bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (f->bev == NULL) {
		close(fd);
		free(f);
		return;
	}
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	bufferevent_setcb(f->bev, flow_local_read, flow_local_write, flow_local_event, f);
	f->next = d->flows;
	if (d->flows != NULL)
		d->flows->prev = f;
	d->flows = f;
	d->flows_active++;
	if (ls->kind == FLOW_LOOPBACK) {
		snprintf(f->host, sizeof(f->host), "%s", ls->name);
		f->port = ls->port;
		f->state = F_OPENING;
		flow_start(f);
		if (!f->dead && f->state == F_OPENING)
			bufferevent_enable(f->bev, EV_READ); /* queued until the 200 */
		return;
	}
	f->state = ls->kind == FLOW_SOCKS ? F_SOCKS_GREETING : F_HTTP_REQUEST;
	bufferevent_enable(f->bev, EV_READ);
}

static int listen_on(struct daemon *d, enum flow_kind kind, const char *addr_text, uint16_t port,
		     const char *name, struct sp_diag *diag)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t sl;
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, addr_text, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		sl = sizeof(*in4);
	} else if (inet_pton(AF_INET6, addr_text, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		sl = sizeof(*in6);
	} else {
		return sp_diag_set(diag, SP_ERR_INVALID, "listen address %s: not an IP", addr_text);
	}
	struct listener *ls = calloc(1, sizeof(*ls));
	if (ls == NULL)
		return SP_ERR_NOMEM;
	ls->d = d;
	ls->kind = kind;
	ls->port = port;
	snprintf(ls->name, sizeof(ls->name), "%s", name != NULL ? name : "");
	snprintf(ls->addr_text, sizeof(ls->addr_text), "%s", addr_text);
	ls->l = evconnlistener_new_bind(d->base, on_accept, ls,
					LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
					    LEV_OPT_CLOSE_ON_EXEC,
					128, (struct sockaddr *)&ss, (int)sl);
	if (ls->l == NULL) {
		free(ls);
		return sp_diag_set(diag, SP_ERR_IO, "cannot listen on %s:%u: %s", addr_text, port,
				   strerror(errno));
	}
	ls->next = d->listeners;
	d->listeners = ls;
	return 0;
}

static int parse_listen(const char *text, char *host, size_t hsize, uint16_t *port,
			struct sp_diag *diag)
{
	if (sp_config_parse_address(text, host, hsize, port, diag) < 0)
		return SP_ERR_INVALID;
	return 0;
}

/* ---------- resource list ---------- */

static int resource_still_listed(const json_t *claims, const char *rid)
{
	size_t i;
	json_t *item;
	json_array_foreach(json_object_get(claims, "resources"), i, item)
	{
		const char *id = json_string_value(json_object_get(item, "id"));
		if (id != NULL && strcmp(id, rid) == 0)
			return 1;
	}
	return 0;
}

static void loopback_sync(struct daemon *d)
{
	struct loopback_listener plan[1024];
	size_t n = 0, all = 0;
	if (loopback_plan(d->lb, d->resources, d->nres, plan, 1024, &n, &all) < 0)
		SP_LOG_MSG(SP_LOG_WARN, "loopback plan truncated at 1024 listeners");
	d->ports_all = all;
	/* with the DNS stub, its synthetic table (over the same range) owns the addresses */
	for (size_t i = 0; i < n && d->stub != NULL; i++) {
		struct synthetic_mapping m;
		if (synthetic_assign(dns_stub_synthetic(d->stub), plan[i].name, strlen(plan[i].name),
				     (int64_t)plan[i].resource_position + 1, &m) == 0)
			memcpy(plan[i].addr, m.v4, 4);
	}
	/* close listeners no longer planned */
	struct listener **pp = &d->listeners;
	while (*pp != NULL) {
		struct listener *ls = *pp;
		int keep = ls->kind != FLOW_LOOPBACK;
		for (size_t i = 0; i < n && !keep; i++) {
			char a[INET_ADDRSTRLEN];
			inet_ntop(AF_INET, plan[i].addr, a, sizeof(a));
			keep = plan[i].port == ls->port && strcmp(a, ls->addr_text) == 0;
		}
		if (keep) {
			pp = &ls->next;
			continue;
		}
		*pp = ls->next;
		evconnlistener_free(ls->l);
		free(ls);
	}
	for (size_t i = 0; i < n; i++) {
		char a[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, plan[i].addr, a, sizeof(a));
		int have = 0;
		for (struct listener *ls = d->listeners; ls != NULL && !have; ls = ls->next)
			have = ls->kind == FLOW_LOOPBACK && ls->port == plan[i].port &&
			       strcmp(ls->addr_text, a) == 0;
		if (have)
			continue;
		struct sp_diag diag = {{0}};
		if (listen_on(d, FLOW_LOOPBACK, a, plan[i].port, plan[i].name, &diag) < 0)
			SP_LOG(SP_LOG_WARN, "loopback listener failed", SP_LOG_STR("why", diag.message));
	}
}

static void apply_claims(struct daemon *d, json_t *claims)
{
	char *text = json_dumps(claims, JSON_COMPACT);
	struct sp_resource *res = NULL;
	size_t count = 0;
	struct sp_resource_index *index = NULL;
	struct sp_diag diag = {{0}};
	if (text == NULL || resource_list_parse(text, strlen(text), &res, &count, &diag) < 0 ||
	    sp_resource_index_build(res, count, &index, &diag) < 0) {
		SP_LOG(SP_LOG_ERROR, "resource list unusable", SP_LOG_STR("why", diag.message));
		free(text);
		sp_resource_list_free(res, count);
		json_decref(claims);
		return;
	}
	free(text);
	sp_resource_index_free(d->index);
	sp_resource_list_free(d->resources, d->nres);
	json_decref(d->claims);
	d->claims = claims;
	d->resources = res;
	d->nres = count;
	d->index = index;
	/* a removed resource: its grant goes, its live flows are cut */
	for (struct flow *f = d->flows, *next; f != NULL; f = next) {
		next = f->next;
		if (f->resource_id[0] != '\0' && !resource_still_listed(claims, f->resource_id)) {
			grant_cache_remove(&d->grants, f->resource_id);
			record_denial(d, f, "resource_removed", "client");
			flow_close(f, 1);
		}
	}
	for (size_t i = d->grants.count; i-- > 0;)
		if (!resource_still_listed(claims, d->grants.entries[i].resource_id))
			grant_cache_remove(&d->grants, d->grants.entries[i].resource_id);
	if (d->stub != NULL && dns_stub_set_resources(d->stub, res, count, &diag) < 0)
		SP_LOG(SP_LOG_WARN, "DNS stub kept its old resources", SP_LOG_STR("why", diag.message));
	if (d->o->mode == DAEMON_MODE_LOOPBACK)
		loopback_sync(d);
	SP_LOG(SP_LOG_INFO, "resource list", SP_LOG_UINT("resources", count),
	       SP_LOG_INT("seq", json_integer_value(json_object_get(claims, "seq"))));
}

static void on_notify(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct daemon *d = arg;
	char buf[64];
	while (read(fd, buf, sizeof(buf)) > 0) {
	}
	pthread_mutex_lock(&d->lock);
	json_t *claims = d->pending_claims;
	d->pending_claims = NULL;
	struct grant_result *results = d->grant_results;
	d->grant_results = NULL;
	pthread_mutex_unlock(&d->lock);
	if (claims != NULL)
		apply_claims(d, claims);
	while (results != NULL) {
		struct grant_result *r = results;
		results = r->next;
		int ok = r->grant != NULL && grant_cache_put(&d->grants, r->resource_id, r->grant,
							      r->expires_at, now_s()) == 0;
		if (r->grant != NULL && !ok)
			snprintf(r->reason, sizeof(r->reason), "bad_grant");
		for (struct flow *f = d->flows, *next; f != NULL; f = next) {
			next = f->next;
			if (!f->waiting_grant || strcmp(f->resource_id, r->resource_id) != 0)
				continue;
			f->waiting_grant = 0;
			if (ok)
				flow_dispatch(f);
			else
				flow_refuse(f, r->reason, r->origin, "no grant from the controller");
		}
		free_secret(r->grant);
		free(r);
	}
	if (d->stop)
		event_base_loopbreak(d->base);
}

static void on_reaper(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct daemon *d = arg;
	while (d->zombies != NULL) {
		struct flow *f = d->zombies;
		d->zombies = f->next;
		free(f);
	}
	while (d->dead_tunnels != NULL) {
		struct tunnel *tn = d->dead_tunnels;
		d->dead_tunnels = tn->next;
		tunnel_free(tn);
	}
}

/* ---------- controller thread ---------- */

static void notify_loop(struct daemon *d)
{
	char b = 1;
	ssize_t n = write(d->notify[1], &b, 1);
	(void)n;
}

static void ctl_sleep(struct daemon *d, int seconds)
{
	for (int i = 0; i < seconds * 10 && !d->stop; i++)
		usleep(100 * 1000);
}

static void set_ctl_error(struct daemon *d, const char *msg)
{
	pthread_mutex_lock(&d->lock);
	snprintf(d->ctl_error, sizeof(d->ctl_error), "%s", msg);
	pthread_mutex_unlock(&d->lock);
}

static void *ctl_main(void *arg)
{
	struct daemon *d = arg;
	struct sp_jwks keys;
	sp_jwks_init(&keys);
	int have_keys = 0, need_fetch = 1, backoff = 1;
	int64_t seq = -1;
	while (!d->stop) {
		struct sp_diag diag = {{0}};
		pthread_mutex_lock(&d->lock);
		int need_refresh = d->access == NULL || d->access_exp - now_s() < 120;
		pthread_mutex_unlock(&d->lock);
		if (need_refresh) {
			char *access = NULL;
			int64_t exp = 0;
			/* refresh on a copy: the loop thread reads the session for status */
			pthread_mutex_lock(&d->lock);
			json_t *copy = json_deep_copy(d->session);
			pthread_mutex_unlock(&d->lock);
			if (copy == NULL) {
				ctl_sleep(d, 1);
				continue;
			}
			int rc = api_refresh(d->o->state_dir, copy, &access, &exp, &diag);
			pthread_mutex_lock(&d->lock);
			json_decref(d->session);
			d->session = copy; /* holds the newest refresh token whatever happened */
			pthread_mutex_unlock(&d->lock);
			if (rc < 0) {
				set_ctl_error(d, diag.message);
				SP_LOG(SP_LOG_WARN, "session refresh failed", SP_LOG_STR("why", diag.message));
				if (rc == SP_ERR_PERMISSION) {
					pthread_mutex_lock(&d->lock);
					free_secret(d->access);
					d->access = NULL;
					pthread_mutex_unlock(&d->lock);
				}
				ctl_sleep(d, backoff);
				backoff = backoff < 30 ? backoff * 2 : 30;
				continue;
			}
			pthread_mutex_lock(&d->lock);
			free_secret(d->access);
			d->access = access;
			d->access_exp = exp;
			pthread_mutex_unlock(&d->lock);
		}
		char *access = access_token(d);
		if (access == NULL)
			continue;
		if (!have_keys && api_fetch_jwks(d->controller, &keys, &diag) == 0)
			have_keys = 1;
		if (need_fetch && have_keys) {
			json_t *claims = NULL;
			int rc = api_fetch_resources(d->controller, access, d->device_id, &keys, now_s(),
						     &claims, &diag);
			if (rc == 0) {
				seq = json_integer_value(json_object_get(claims, "seq"));
				pthread_mutex_lock(&d->lock);
				json_decref(d->pending_claims);
				d->pending_claims = claims;
				d->ctl_error[0] = '\0';
				pthread_mutex_unlock(&d->lock);
				notify_loop(d);
				need_fetch = 0;
			} else {
				set_ctl_error(d, diag.message);
				SP_LOG(SP_LOG_WARN, "resource list fetch failed",
				       SP_LOG_STR("why", diag.message));
			}
		}
		if (!have_keys || need_fetch) {
			free_secret(access);
			ctl_sleep(d, backoff);
			backoff = backoff < 30 ? backoff * 2 : 30;
			continue;
		}
		backoff = 1;
		char path[128];
		snprintf(path, sizeof(path), "/api/client/v1/feed?after=%lld&timeout=25",
			 (long long)seq);
		long status = 0;
		json_t *ans = NULL;
		int rc = api_call(d->controller, "GET", path, NULL, access, 40, &status, &ans, &diag);
		free_secret(access);
		if (rc < 0 || status != 200) {
			if (status == 401) {
				pthread_mutex_lock(&d->lock);
				d->access_exp = 0;
				pthread_mutex_unlock(&d->lock);
			}
			json_decref(ans);
			ctl_sleep(d, 2);
			continue;
		}
		seq = json_integer_value(json_object_get(ans, "seq"));
		size_t i;
		json_t *kind;
		json_array_foreach(json_object_get(ans, "changes"), i, kind)
		{
			const char *k = json_string_value(kind);
			if (k != NULL && strcmp(k, "resources") == 0)
				need_fetch = 1;
			if (k != NULL && strcmp(k, "session") == 0) {
				need_fetch = 1;
				pthread_mutex_lock(&d->lock);
				d->access_exp = 0;
				pthread_mutex_unlock(&d->lock);
			}
		}
		json_decref(ans);
	}
	sp_jwks_free(&keys);
	return NULL;
}

/* ---------- control socket ---------- */

static json_t *status_json(struct daemon *d)
{
	json_t *s = json_object();
	json_object_set_new(s, "state", json_string("up"));
	json_object_set_new(s, "mode", json_string(d->o->mode == DAEMON_MODE_PROXY ? "proxy"
										   : "loopback"));
	json_object_set_new(s, "controller", json_string(d->controller));
	json_object_set_new(s, "device_id", json_string(d->device_id));
	pthread_mutex_lock(&d->lock);
	json_t *v = json_object_get(d->session, "session_id");
	if (v != NULL)
		json_object_set_new(s, "session_id", json_deep_copy(v));
	if ((v = json_object_get(d->session, "user")) != NULL)
		json_object_set_new(s, "user", json_deep_copy(v));
	pthread_mutex_unlock(&d->lock);
	json_object_set_new(s, "resources", json_integer((json_int_t)d->nres));
	json_object_set_new(s, "resource_list_seq",
			    json_integer(json_integer_value(json_object_get(d->claims, "seq"))));
	pthread_mutex_lock(&d->lock);
	json_object_set_new(s, "signed_in", json_boolean(d->access != NULL));
	if (d->ctl_error[0] != '\0')
		json_object_set_new(s, "controller_error", json_string(d->ctl_error));
	pthread_mutex_unlock(&d->lock);
	json_t *tunnels = json_array();
	for (struct tunnel *tn = d->tunnels; tn != NULL; tn = tn->next) {
		struct sp_tunnel_stats st;
		sp_tunnel_get_stats(tn->t, &st);
		json_array_append_new(
		    tunnels,
		    json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "connector_id",
			      tn->connector_id, "connector", tn->connector_name, "network_id",
			      tn->network_id, "address", tn->address, "path", "direct", "streams_open",
			      (json_int_t)st.streams_open, "streams_total",
			      (json_int_t)st.streams_total, "bytes_in", (json_int_t)st.bytes_in,
			      "bytes_out", (json_int_t)st.bytes_out));
		json_object_set_new(json_array_get(tunnels, json_array_size(tunnels) - 1), "state",
				    json_string(tn->handshake_done ? "up" : "connecting"));
	}
	json_object_set_new(s, "tunnels", tunnels);
	json_t *active = json_array();
	for (struct flow *f = d->flows; f != NULL; f = f->next)
		if (f->state == F_OPEN || f->state == F_OPENING)
			json_array_append_new(
			    active, json_pack("{s:s, s:i, s:s, s:s, s:I, s:I}", "host", f->host, "port",
					      (int)f->port, "resource_id", f->resource_id, "state",
					      f->state == F_OPEN ? "open" : "opening", "bytes_up",
					      (json_int_t)f->up, "bytes_down", (json_int_t)f->down));
	json_object_set_new(s, "flows",
			    json_pack("{s:I, s:I, s:I, s:o}", "active", (json_int_t)d->flows_active,
				      "total", (json_int_t)d->flows_total, "refused",
				      (json_int_t)d->flows_refused, "open", active));
	json_t *den = json_array();
	for (size_t i = 0; i < d->denials_count; i++) {
		size_t k = (d->denials_next + DENIALS_MAX - 1 - i) % DENIALS_MAX;
		struct denial *x = &d->denials[k];
		json_array_append_new(den, json_pack("{s:I, s:s, s:s, s:s, s:s}", "time",
						     (json_int_t)x->time, "target", x->target,
						     "resource_id", x->resource_id, "reason",
						     x->reason, "by", x->origin));
	}
	json_object_set_new(s, "denials", den);
	json_t *ls = json_array();
	for (struct listener *l = d->listeners; l != NULL; l = l->next)
		json_array_append_new(
		    ls, json_pack("{s:s, s:s, s:i, s:s}", "kind",
				  l->kind == FLOW_SOCKS	 ? "socks5"
				  : l->kind == FLOW_HTTP ? "http-connect"
							 : "loopback",
				  "address", l->addr_text, "port", (int)l->port, "name", l->name));
	json_object_set_new(s, "listeners", ls);
	if (d->stub != NULL)
		json_object_set_new(s, "dns", json_string(d->o->dns_addr));
	if (d->o->mode == DAEMON_MODE_LOOPBACK)
		json_object_set_new(s, "resources_all_ports_not_listened",
				    json_integer((json_int_t)d->ports_all));
	return s;
}

static void control_release(struct daemon *d, struct bufferevent *bev)
{
	for (size_t i = 0; i < sizeof(d->control_conns) / sizeof(d->control_conns[0]); i++)
		if (d->control_conns[i] == bev)
			d->control_conns[i] = NULL;
	bufferevent_free(bev);
}

static void control_done(struct bufferevent *bev, void *arg)
{
	control_release(arg, bev);
}

static void control_read(struct bufferevent *bev, void *arg)
{
	struct daemon *d = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = 0;
	char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX)
			control_release(d, bev);
		return;
	}
	enum control_cmd cmd = 0;
	struct sp_diag diag = {{0}};
	json_t *reply;
	int rc = control_parse(line, len, &cmd, &diag);
	free(line);
	if (rc < 0)
		reply = json_pack("{s:{s:s}}", "error", "message", diag.message);
	else if (cmd == CONTROL_STATUS)
		reply = status_json(d);
	else if (cmd == CONTROL_RESOURCES)
		reply = json_pack("{s:O?, s:O?, s:I}", "resources",
				  json_object_get(d->claims, "resources"), "networks",
				  json_object_get(d->claims, "networks"), "seq",
				  json_integer_value(json_object_get(d->claims, "seq")));
	else {
		reply = json_pack("{s:s}", "state", "stopping");
		d->stop = 1;
		event_base_loopexit(d->base, &(struct timeval){0, 100000});
	}
	char *text = reply != NULL ? json_dumps(reply, JSON_COMPACT) : NULL;
	json_decref(reply);
	if (text != NULL) {
		bufferevent_write(bev, text, strlen(text));
		bufferevent_write(bev, "\n", 1);
		free(text);
	}
	bufferevent_disable(bev, EV_READ);
	bufferevent_setcb(bev, NULL, control_done, NULL, d);
}

static void control_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	control_release(arg, bev);
}

static void on_control(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int slen,
		       void *arg)
{
	(void)l;
	(void)sa;
	(void)slen;
	struct daemon *d = arg;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == -1 ||
	    (cred.uid != geteuid() && cred.uid != 0)) {
		SP_LOG(SP_LOG_WARN, "control connection refused",
		       SP_LOG_INT("uid", clen == sizeof(cred) ? (int64_t)cred.uid : -1));
		close(fd);
		return;
	}
	size_t slot = 0, cap = sizeof(d->control_conns) / sizeof(d->control_conns[0]);
	while (slot < cap && d->control_conns[slot] != NULL)
		slot++;
	if (slot == cap || d->stop) {
		close(fd);
		return;
	}
	struct bufferevent *bev = bufferevent_socket_new(d->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return;
	}
	d->control_conns[slot] = bev;
	bufferevent_setcb(bev, control_read, NULL, control_event, d);
	bufferevent_enable(bev, EV_READ);
}

static int control_open(struct daemon *d, struct sp_diag *diag)
{
	if (state_path(d->o->state_dir, "control.sock", d->control_path, sizeof(d->control_path)) <
	    0)
		return SP_ERR_TOO_LARGE;
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	if (strlen(d->control_path) >= sizeof(un.sun_path))
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "control socket path too long: %s",
				   d->control_path);
	memcpy(un.sun_path, d->control_path, strlen(d->control_path) + 1);
	/* a live daemon answers; a stale socket file is removed */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe != -1 && connect(probe, (struct sockaddr *)&un, sizeof(un)) == 0) {
		close(probe);
		return sp_diag_set(diag, SP_ERR_EXISTS, "the daemon is already up (%s)",
				   d->control_path);
	}
	if (probe != -1)
		close(probe);
	(void)unlink(d->control_path);
	mode_t old = umask(0177);
	d->control = evconnlistener_new_bind(d->base, on_control, d,
					     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16,
					     (struct sockaddr *)&un, (int)sizeof(un));
	umask(old);
	if (d->control == NULL)
		return sp_diag_set(diag, SP_ERR_IO, "cannot listen on %s: %s", d->control_path,
				   strerror(errno));
	if (chmod(d->control_path, 0600) == -1)
		return sp_diag_set(diag, SP_ERR_IO, "chmod %s: %s", d->control_path, strerror(errno));
	return 0;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	struct daemon *d = arg;
	d->stop = 1;
	event_base_loopbreak(d->base);
}

/* ---------- run ---------- */

int daemon_run(const struct daemon_options *o, struct sp_diag *diag)
{
	struct daemon *d = calloc(1, sizeof(*d));
	if (d == NULL)
		return SP_ERR_NOMEM;
	int rc = 0;
	d->o = o;
	d->notify[0] = d->notify[1] = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->grant_cond, NULL);
	grant_cache_init(&d->grants);
	api_set_abort_flag(&d->stop);
	rc = state_session_load(o->state_dir, &d->session, diag);
	if (rc < 0)
		goto out;
	snprintf(d->controller, sizeof(d->controller), "%s",
		 json_string_value(json_object_get(d->session, "controller")));
	snprintf(d->device_id, sizeof(d->device_id), "%s",
		 json_string_value(json_object_get(d->session, "device_id")));
	char key_path[STATE_PATH_MAX];
	state_path(o->state_dir, "device.key", key_path, sizeof(key_path));
	rc = sp_key_load_private(key_path, &d->key, diag);
	if (rc < 0)
		goto out;
	const char *alpn[] = {SP_TLS_ALPN_SALLYPORT_1};
	struct sp_tls_options topts = {.alpn = alpn, .alpn_count = 1, .now = now_s()};
	rc = sp_tls_client_ctx_new(d->key, &topts, &d->tls_ctx, diag);
	if (rc < 0)
		goto out;
	d->base = event_base_new();
	if (d->base == NULL || pipe2(d->notify, O_NONBLOCK | O_CLOEXEC) == -1) {
		rc = sp_diag_set(diag, SP_ERR_IO, "event loop setup failed");
		goto out;
	}
	d->ev_notify = event_new(d->base, d->notify[0], EV_READ | EV_PERSIST, on_notify, d);
	d->ev_reaper = event_new(d->base, -1, 0, on_reaper, d);
	d->ev_sigterm = evsignal_new(d->base, SIGTERM, on_signal, d);
	d->ev_sigint = evsignal_new(d->base, SIGINT, on_signal, d);
	event_add(d->ev_notify, NULL);
	event_add(d->ev_sigterm, NULL);
	event_add(d->ev_sigint, NULL);
	rc = control_open(d, diag);
	if (rc < 0)
		goto out;
	if (o->mode == DAEMON_MODE_PROXY) {
		char host[256];
		uint16_t port = 0;
		if (o->socks_addr != NULL && o->socks_addr[0] != '\0') {
			rc = parse_listen(o->socks_addr, host, sizeof(host), &port, diag);
			if (rc == 0)
				rc = listen_on(d, FLOW_SOCKS, host, port, NULL, diag);
			if (rc < 0)
				goto out;
		}
		if (o->http_addr != NULL && o->http_addr[0] != '\0') {
			rc = parse_listen(o->http_addr, host, sizeof(host), &port, diag);
			if (rc == 0)
				rc = listen_on(d, FLOW_HTTP, host, port, NULL, diag);
			if (rc < 0)
				goto out;
		}
	} else {
		rc = loopback_new(o->loopback_range, &d->lb, diag);
		if (rc < 0)
			goto out;
		if (o->dns_addr != NULL && o->dns_addr[0] != '\0') {
			char host[256];
			uint16_t port = 0;
			rc = parse_listen(o->dns_addr, host, sizeof(host), &port, diag);
			if (rc < 0)
				goto out;
			struct dns_stub_config dc = {
			    .listen_address = host,
			    .listen_port = port,
			    .upstreams = o->dns_upstreams,
			    .synthetic_v4 = o->loopback_range != NULL ? o->loopback_range
								      : LOOPBACK_DEFAULT_RANGE,
			    .synthetic_v6 = "off",
			};
			rc = dns_stub_new(d->base, &dc, &d->stub, diag);
			if (rc < 0)
				goto out;
		}
	}
	if (pthread_create(&d->ctl_thread, NULL, ctl_main, d) != 0) {
		rc = sp_diag_set(diag, SP_ERR_IO, "cannot start the controller thread");
		goto out;
	}
	d->ctl_started = 1;
	if (pthread_create(&d->grant_thread, NULL, grant_main, d) != 0) {
		rc = sp_diag_set(diag, SP_ERR_IO, "cannot start the grant thread");
		goto out;
	}
	d->grant_started = 1;
	SP_LOG(SP_LOG_INFO, "sallyport up", SP_LOG_STR("controller", d->controller),
	       SP_LOG_STR("mode", o->mode == DAEMON_MODE_PROXY ? "proxy" : "loopback"),
	       SP_LOG_STR("control", d->control_path));
	event_base_dispatch(d->base);
	SP_LOG_MSG(SP_LOG_INFO, "sallyport stopping");
out:
	d->stop = 1;
	pthread_mutex_lock(&d->lock);
	pthread_cond_broadcast(&d->grant_cond);
	pthread_mutex_unlock(&d->lock);
	if (d->grant_started)
		pthread_join(d->grant_thread, NULL);
	if (d->ctl_started)
		pthread_join(d->ctl_thread, NULL);
	while (d->grant_queue != NULL) {
		struct grant_request *rq = d->grant_queue;
		d->grant_queue = rq->next;
		free(rq);
	}
	while (d->grant_results != NULL) {
		struct grant_result *r = d->grant_results;
		d->grant_results = r->next;
		free_secret(r->grant);
		free(r);
	}
	while (d->flows != NULL)
		flow_close(d->flows, 1);
	while (d->tunnels != NULL)
		tunnel_fail(d->tunnels, "daemon stopping");
	if (d->ev_reaper != NULL)
		on_reaper(-1, 0, d);
	while (d->listeners != NULL) {
		struct listener *ls = d->listeners;
		d->listeners = ls->next;
		evconnlistener_free(ls->l);
		free(ls);
	}
	for (size_t i = 0; i < sizeof(d->control_conns) / sizeof(d->control_conns[0]); i++)
		if (d->control_conns[i] != NULL)
			bufferevent_free(d->control_conns[i]);
	if (d->base != NULL)
		event_base_loop(d->base, EVLOOP_NONBLOCK); /* let freed bufferevents finalize */
	if (d->control != NULL) {
		evconnlistener_free(d->control);
		(void)unlink(d->control_path);
	}
	if (d->ev_notify != NULL)
		event_free(d->ev_notify);
	if (d->ev_reaper != NULL)
		event_free(d->ev_reaper);
	if (d->ev_sigterm != NULL)
		event_free(d->ev_sigterm);
	if (d->ev_sigint != NULL)
		event_free(d->ev_sigint);
	if (d->base != NULL)
		event_base_free(d->base);
	if (d->notify[0] != -1)
		close(d->notify[0]);
	if (d->notify[1] != -1)
		close(d->notify[1]);
	dns_stub_free(d->stub);
	loopback_free(d->lb);
	grant_cache_free(&d->grants);
	sp_resource_index_free(d->index);
	sp_resource_list_free(d->resources, d->nres);
	json_decref(d->claims);
	json_decref(d->pending_claims);
	json_decref(d->session);
	free_secret(d->access);
	SSL_CTX_free(d->tls_ctx);
	EVP_PKEY_free(d->key);
	pthread_cond_destroy(&d->grant_cond);
	pthread_mutex_destroy(&d->lock);
	api_set_abort_flag(NULL);
	free(d);
	return rc;
}
