/*
 * client/daemon_flows.c — the daemon's data plane: local connections (loopback listeners,
 * SOCKS5 and HTTP CONNECT), tunnels to connectors (one per connector in use, failover,
 * backoff), the grant thread, and the reaper that frees closed flows and tunnels.
 *
 * Ownership: flows and tunnels are heap objects in doubly linked lists of struct daemon;
 * closing one detaches it at once and on_reaper frees it later, so no callback ever sees
 * freed memory (tunnel callbacks fire synchronously inside sp_tunnel_tls_recv/flush, and
 * tunnels are flushed only from their own socket and kick events, never from inside them).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "client/api.h"
#include "client/daemon_internal.h"
#include "shared/config.h"
#include "shared/keys.h"
#include "shared/log.h"
#include "shared/tls.h"
#include "shared/secret.h"
#include "shared/wire.h"

/* ---------- denials ---------- */

void record_denial(struct daemon *d, const struct flow *f, const char *reason,
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

void flow_close(struct flow *f, int rst)
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
	if (f->udp != NULL)
		udp_flow_release(f);
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
void flow_refuse(struct flow *f, const char *reason, const char *origin, const char *text)
{
	record_denial(f->d, f, reason, origin);
	if (f->kind == FLOW_LOOPBACK || f->kind == FLOW_UDP) {
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
	if (f->kind == FLOW_UDP) {
		udp_flow_opened(f);
		return;
	}
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
	if (f->kind == FLOW_UDP) {
		sp_tunnel_consumed(t, stream, len);
		udp_flow_data(f, data, len);
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
	if (f->kind == FLOW_UDP) {
		flow_close(f, 0);
		return;
	}
	f->remote_end = 1;
	if (evbuffer_get_length(bufferevent_get_output(f->bev)) == 0)
		shutdown(bufferevent_getfd(f->bev), SHUT_WR);
}

static void on_writable(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)user;
	struct flow *f = stream_flow(t, stream);
	if (f != NULL && !f->dead && f->kind == FLOW_UDP) {
		udp_flow_writable(f);
		return;
	}
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
	if (code != 0 || f->state != F_OPEN || f->kind == FLOW_UDP) {
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

void flow_dispatch(struct flow *f);

void tunnel_fail(struct tunnel *tn, const char *why)
{
	if (tn->dead)
		return;
	struct daemon *d = tn->d;
	tn->dead = 1;
	SP_LOG(SP_LOG_WARN, "tunnel closed", SP_LOG_STR("connector", tn->connector_name),
	       SP_LOG_STR("address", tn->address), SP_LOG_STR("why", why));
	if (!tn->handshake_done) {
		/* a direct failure sends the next try through the relay; a relayed one moves
		 * on to another connector of the network */
		struct connector_health *h = health_of(d, tn->connector_id);
		int64_t *backoff = tn->relayed ? &h->backoff : &h->direct_backoff;
		*backoff = *backoff == 0 ? 1 : *backoff * 2;
		if (*backoff > CONNECTOR_BACKOFF_MAX_S)
			*backoff = CONNECTOR_BACKOFF_MAX_S;
		if (tn->relayed)
			h->retry_at = now_s() + *backoff;
		else
			h->direct_retry_at = now_s() + *backoff;
	}
	if (tn->ev_read != NULL)
		event_del(tn->ev_read);
	if (tn->ev_write != NULL)
		event_del(tn->ev_write);
	event_del(tn->ev_kick);
	event_del(tn->ev_timeout);
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
	/*
	 * flows on it: unanswered ones that sent nothing yet try another connector (failover:
	 * the service saw at most a connection), the others are cut
	 */
	for (struct flow *f = d->flows, *next; f != NULL; f = next) {
		next = f->next;
		if (f->tn != tn)
			continue;
		f->tn = NULL;
		f->stream = 0;
		if (f->state == F_OPENING && !f->stream_closed && (!tn->handshake_done || f->up == 0))
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
	if (tn->relay_phase == RELAY_WAIT_STATUS) {
		uint8_t status = 0;
		ssize_t n = recv(fd, &status, 1, 0);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			tunnel_fail(tn, n == 0 ? "closed by the relay" : strerror(errno));
			return;
		}
		if (status != SP_RELAY_PAIRED) {
			char why[64];
			snprintf(why, sizeof(why), "relay: %s", sp_relay_status_name(status));
			tunnel_fail(tn, why);
			return;
		}
		tn->relay_phase = RELAY_PAIRED;
		tn->tcp_connected = 1;
		tunnel_pump(tn); /* the ClientHello and the opens queued meanwhile */
		if (tn->dead)
			return;
	}
	for (int rounds = 0; rounds < 16 && !tn->dead; rounds++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			/* through a relay an end without a TLS alert may be either side's */
			const char *who = tn->relayed ? "closed by the relay or the connector"
						      : "closed by the connector";
			tunnel_fail(tn, n == 0 ? who : strerror(errno));
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
				event_del(tn->ev_timeout);
				for (struct flow *f = tn->d->flows; f != NULL; f = f->next)
					if (f->tn == tn && f->bev != NULL && !f->dead)
						bufferevent_trigger(f->bev, EV_READ,
								    BEV_OPT_DEFER_CALLBACKS);
				struct connector_health *h = health_of(tn->d, tn->connector_id);
				if (tn->relayed)
					h->backoff = 0;
				else
					h->direct_backoff = 0;
				SP_LOG(SP_LOG_INFO, "tunnel up",
				       SP_LOG_STR("connector", tn->connector_name),
				       SP_LOG_STR("address", tn->address),
				       SP_LOG_STR("path", tn->relayed ? "relayed" : "direct"));
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
		if (!tn->relayed) {
			tn->tcp_connected = 1;
			event_add(tn->ev_read, NULL);
		}
	}
	if (tn->relay_phase == RELAY_CONNECTING) {
		while (tn->relay_hello_off < tn->relay_hello_len) {
			ssize_t n = send(fd, tn->relay_hello + tn->relay_hello_off,
					 tn->relay_hello_len - tn->relay_hello_off, MSG_NOSIGNAL);
			if (n == -1 && errno == EINTR)
				continue;
			if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			if (n == -1) {
				tunnel_fail(tn, strerror(errno));
				return;
			}
			tn->relay_hello_off += (size_t)n;
		}
		OPENSSL_cleanse(tn->relay_hello, tn->relay_hello_len);
		free(tn->relay_hello);
		tn->relay_hello = NULL;
		tn->relay_phase = RELAY_WAIT_STATUS;
		event_del(tn->ev_write);
		event_add(tn->ev_read, NULL);
		return;
	}
	tunnel_pump(tn);
}

static void tunnel_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct tunnel *tn = arg;
	if (!tn->dead && !tn->handshake_done)
		tunnel_fail(tn, tn->relayed ? "relayed tunnel not up in time" : "no answer in time");
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

static void health_bump(struct daemon *d, const char *id, int direct)
{
	struct connector_health *h = health_of(d, id);
	int64_t *backoff = direct ? &h->direct_backoff : &h->backoff;
	*backoff = *backoff == 0 ? 1 : *backoff * 2;
	if (*backoff > CONNECTOR_BACKOFF_MAX_S)
		*backoff = CONNECTOR_BACKOFF_MAX_S;
	if (direct)
		h->direct_retry_at = now_s() + *backoff;
	else
		h->retry_at = now_s() + *backoff;
}

static void tunnel_free(struct tunnel *tn)
{
	if (tn->ev_read != NULL)
		event_free(tn->ev_read);
	if (tn->ev_write != NULL)
		event_free(tn->ev_write);
	if (tn->ev_kick != NULL)
		event_free(tn->ev_kick);
	if (tn->ev_timeout != NULL)
		event_free(tn->ev_timeout);
	if (tn->relay_hello != NULL) {
		OPENSSL_cleanse(tn->relay_hello, tn->relay_hello_len);
		free(tn->relay_hello);
	}
	sp_tunnel_tls_free(tn->tt);
	sp_tunnel_free(tn->t);
	SSL_free(tn->ssl);
	if (tn->fd != -1)
		close(tn->fd);
	free(tn);
}

/* A tunnel object for a connector of the network (TLS pinned to its key), not linked and
 * without a socket yet. NULL when the connector entry is unusable or out of memory. */
static struct tunnel *tunnel_alloc(struct daemon *d, const char *network_id, json_t *conn,
				   int relayed)
{
	const char *id = json_string_value(json_object_get(conn, "id"));
	const char *name = json_string_value(json_object_get(conn, "name"));
	const char *digest = json_string_value(json_object_get(conn, "public_key_digest"));
	uint8_t pin[SP_KEY_SPKI_DIGEST_LEN];
	if (id == NULL || strlen(id) > ID_MAX || hex_pin(digest, pin) < 0)
		return NULL;
	struct tunnel *tn = calloc(1, sizeof(*tn));
	if (tn == NULL)
		return NULL;
	tn->d = d;
	tn->fd = -1;
	tn->relayed = relayed;
	snprintf(tn->connector_id, sizeof(tn->connector_id), "%s", id);
	snprintf(tn->connector_name, sizeof(tn->connector_name), "%s", name != NULL ? name : id);
	snprintf(tn->network_id, sizeof(tn->network_id), "%s", network_id);
	tn->started = now_s();
	if (sp_tls_conn_new_memory(d->tls_ctx, &tn->ssl) < 0 ||
	    sp_tls_set_expected_peer(tn->ssl, pin) < 0 ||
	    sp_tunnel_new(SP_TUNNEL_CLIENT, &tunnel_cb, tn, NULL, &tn->t) < 0 ||
	    sp_tunnel_tls_new(tn->ssl, tn->t, &tn->tt) < 0)
		goto fail;
	tn->ev_kick = event_new(d->base, -1, 0, tunnel_on_kick, tn);
	tn->ev_timeout = evtimer_new(d->base, tunnel_on_timeout, tn);
	if (tn->ev_kick == NULL || tn->ev_timeout == NULL)
		goto fail;
	struct timeval tv = {relayed ? TUNNEL_RELAY_TIMEOUT_S : TUNNEL_DIRECT_TIMEOUT_S, 0};
	event_add(tn->ev_timeout, &tv);
	return tn;
fail:
	tunnel_free(tn);
	return NULL;
}

/* Starts a non-blocking connect to "host:port" with the socket events. 0 or -1. */
static int tunnel_connect(struct tunnel *tn, const char *addr)
{
	struct daemon *d = tn->d;
	char host[256], port[8];
	const char *colon = strrchr(addr, ':');
	if (colon == NULL || (size_t)(colon - addr) >= sizeof(host) || strlen(colon + 1) >= 8)
		return -1;
	const char *h = addr;
	size_t hlen = (size_t)(colon - addr);
	if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
		h++;
		hlen -= 2;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	snprintf(port, sizeof(port), "%s", colon + 1);
	snprintf(tn->address, sizeof(tn->address), "%s", addr);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	if (getaddrinfo(host, port, &hints, &res) != 0 || res == NULL)
		return -1;
	tn->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int ok = tn->fd != -1;
	if (ok) {
		int one = 1;
		(void)setsockopt(tn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		ok = connect(tn->fd, res->ai_addr, res->ai_addrlen) == 0 || errno == EINPROGRESS;
	}
	freeaddrinfo(res);
	if (!ok)
		return -1;
	tn->ev_read = event_new(d->base, tn->fd, EV_READ | EV_PERSIST, tunnel_on_read, tn);
	tn->ev_write = event_new(d->base, tn->fd, EV_WRITE | EV_PERSIST, tunnel_on_write, tn);
	if (tn->ev_read == NULL || tn->ev_write == NULL)
		return -1;
	event_add(tn->ev_write, NULL);
	return 0;
}

static void tunnel_link(struct tunnel *tn)
{
	struct daemon *d = tn->d;
	tn->next = d->tunnels;
	if (d->tunnels != NULL)
		d->tunnels->prev = tn;
	d->tunnels = tn;
	SP_LOG(SP_LOG_INFO, "tunnel connecting", SP_LOG_STR("connector", tn->connector_name),
	       SP_LOG_STR("address", tn->address),
	       SP_LOG_STR("path", tn->relayed ? "relayed" : "direct"));
}

static struct tunnel *tunnel_new_direct(struct daemon *d, const char *network_id, json_t *conn)
{
	const char *id = json_string_value(json_object_get(conn, "id"));
	const char *addr = json_string_value(json_object_get(conn, "direct_address"));
	if (id == NULL || addr == NULL)
		return NULL;
	struct tunnel *tn = tunnel_alloc(d, network_id, conn, 0);
	if (tn == NULL || tunnel_connect(tn, addr) < 0) {
		health_bump(d, id, 1);
		if (tn != NULL)
			tunnel_free(tn);
		return NULL;
	}
	tunnel_link(tn);
	return tn;
}

/* Hands a request (a grant or a relay ticket) to the grant thread, in arrival order. */
static void grant_queue_push(struct daemon *d, struct grant_request *rq)
{
	pthread_mutex_lock(&d->lock);
	struct grant_request **pp = &d->grant_queue;
	while (*pp != NULL)
		pp = &(*pp)->next;
	*pp = rq;
	pthread_cond_signal(&d->grant_cond);
	pthread_mutex_unlock(&d->lock);
}

/* A relayed tunnel waits for its ticket (the grant thread asks the controller); flows
 * open their streams on it meanwhile and go out once TLS runs. */
static struct tunnel *tunnel_new_relayed(struct daemon *d, const char *network_id, json_t *conn)
{
	const char *id = json_string_value(json_object_get(conn, "id"));
	if (id == NULL)
		return NULL;
	struct tunnel *tn = tunnel_alloc(d, network_id, conn, 1);
	struct grant_request *rq = tn != NULL ? calloc(1, sizeof(*rq)) : NULL;
	if (rq == NULL) {
		health_bump(d, id, 0);
		if (tn != NULL)
			tunnel_free(tn);
		return NULL;
	}
	tn->relay_phase = RELAY_WAIT_TICKET;
	snprintf(tn->address, sizeof(tn->address), "relay");
	snprintf(rq->connector_id, sizeof(rq->connector_id), "%s", tn->connector_id);
	grant_queue_push(d, rq);
	tunnel_link(tn);
	return tn;
}

void tunnel_ticket_ready(struct daemon *d, const struct grant_result *r)
{
	struct tunnel *tn = d->tunnels;
	while (tn != NULL && (tn->dead || tn->relay_phase != RELAY_WAIT_TICKET ||
			      strcmp(tn->connector_id, r->connector_id) != 0))
		tn = tn->next;
	if (tn == NULL)
		return; /* the tunnel ended meanwhile */
	if (r->ticket == NULL) {
		char why[96];
		snprintf(why, sizeof(why), "no relay ticket: %s", r->reason);
		tunnel_fail(tn, why);
		return;
	}
	struct sp_buf hello;
	sp_buf_init(&hello, 16 + SP_RELAY_TICKET_MAX);
	if (sp_relay_client_hello_encode((const uint8_t *)r->ticket, strlen(r->ticket), &hello) < 0) {
		sp_buf_free_secret(&hello);
		tunnel_fail(tn, "the relay ticket is too long");
		return;
	}
	tn->relay_hello = hello.data; /* ours now; wiped once sent */
	tn->relay_hello_len = hello.len;
	tn->relay_phase = RELAY_CONNECTING;
	if (tunnel_connect(tn, r->relay) < 0)
		tunnel_fail(tn, "cannot connect to the relay");
}

/*
 * A tunnel for a new flow of the network. Flows take the network's connectors in turn
 * (load spread), reusing a connector's live tunnel or making one — direct when the
 * connector advertises an address that has not failed lately, else through the relay —
 * and skip connectors that failed on both paths lately; when none of those works, any
 * live tunnel of the network is used.
 */
static struct tunnel *tunnel_for(struct daemon *d, const char *network_id)
{
	json_t *conns = NULL;
	size_t i;
	json_t *net;
	json_array_foreach(json_object_get(d->claims, "networks"), i, net)
	{
		const char *nid = json_string_value(json_object_get(net, "id"));
		if (nid != NULL && strcmp(nid, network_id) == 0)
			conns = json_object_get(net, "connectors");
	}
	size_t n = json_array_size(conns);
	unsigned start = d->spread_next++;
	for (size_t k = 0; k < n; k++) {
		json_t *conn = json_array_get(conns, (start + k) % n);
		const char *cid = json_string_value(json_object_get(conn, "id"));
		if (cid == NULL)
			continue;
		for (struct tunnel *tn = d->tunnels; tn != NULL; tn = tn->next)
			if (!tn->dead && strcmp(tn->connector_id, cid) == 0 &&
			    !sp_tunnel_peer_going_away(tn->t) && sp_tunnel_can_open(tn->t))
				return tn;
		struct connector_health *h = health_of(d, cid);
		int64_t now = now_s();
		if (h->retry_at > now)
			continue;
		struct tunnel *tn = NULL;
		if (json_is_string(json_object_get(conn, "direct_address")) && h->direct_retry_at <= now)
			tn = tunnel_new_direct(d, network_id, conn);
		if (tn == NULL)
			tn = tunnel_new_relayed(d, network_id, conn);
		if (tn != NULL)
			return tn;
	}
	for (struct tunnel *tn = d->tunnels; tn != NULL; tn = tn->next)
		if (!tn->dead && strcmp(tn->network_id, network_id) == 0 &&
		    !sp_tunnel_peer_going_away(tn->t) && sp_tunnel_can_open(tn->t))
			return tn;
	return NULL;
}

/* ---------- flows: opening ---------- */


/* Grant thread: a relay ticket for the connector and the relay to use (the first listed). */
static void fetch_ticket(struct daemon *d, const char *connector_id, const char *access,
			 struct grant_result *res)
{
	char body[160];
	snprintf(body, sizeof(body), "{\"connector_id\":\"%s\"}", connector_id);
	long status = 0;
	json_t *ans = NULL;
	struct sp_diag diag = {{0}};
	int rc = api_call(d->controller, "POST", "/api/client/v1/relay-tickets", body, access, 10,
			  &status, &ans, &diag);
	const char *ticket = json_string_value(json_object_get(ans, "ticket"));
	const char *relay = json_string_value(json_array_get(json_object_get(ans, "relays"), 0));
	if (rc == 0 && status == 200 && ticket != NULL && relay != NULL &&
	    strlen(relay) < sizeof(res->relay)) {
		res->ticket = strdup(ticket);
		snprintf(res->relay, sizeof(res->relay), "%s", relay);
	}
	if (res->ticket == NULL)
		snprintf(res->reason, sizeof(res->reason), "%s",
			 rc < 0 ? "controller_unreachable"
			 : rc == 0 && status == 200 ? "no_relay" : api_error_code(ans));
	json_decref(ans);
}

/* Grant thread: POST /api/client/v1/grants for each queued resource (or relay-tickets for
 * a connector), one at a time. */
void *grant_main(void *arg)
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
			snprintf(res->connector_id, sizeof(res->connector_id), "%s",
				 rq->connector_id);
			snprintf(res->origin, sizeof(res->origin), "controller");
			if (access == NULL) {
				snprintf(res->reason, sizeof(res->reason), "signed_out");
				snprintf(res->origin, sizeof(res->origin), "client");
			} else if (rq->connector_id[0] != '\0') {
				fetch_ticket(d, rq->connector_id, access, res);
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
	grant_queue_push(d, rq);
}

/*
 * Opens the flow's stream on a tunnel of its network (again, after a failover). Without a
 * cached grant the flow first waits for one (grant thread, see on_notify).
 */
void flow_dispatch(struct flow *f)
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
	if (sp_random_hex(16, flow_id, sizeof(flow_id)) < 0) {
		flow_close(f, 1);
		return;
	}
	struct sp_tunnel_open_request req = {
	    .authority = authority,
	    .proto = f->kind == FLOW_UDP ? SP_TUNNEL_PROTO_UDP : SP_TUNNEL_PROTO_TCP,
	    .grant = grant, .flow_id = flow_id};
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
void flow_start(struct flow *f)
{
	struct daemon *d = f->d;
	const struct sp_resource *res = NULL;
	enum sp_resource_reason reason = SP_RESOURCE_NO_RESOURCE;
	if (d->index != NULL)
		(void)sp_resource_index_match(d->index, f->host,
					      f->kind == FLOW_UDP ? SP_RESOURCE_PROTOCOL_UDP
								  : SP_RESOURCE_PROTOCOL_TCP,
					      f->port, &res, &reason);
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
		if (f->kind == FLOW_SOCKS && target.command == SOCKS5_CMD_UDP_ASSOCIATE) {
			udp_socks_associate(f);
			return;
		}
		snprintf(f->host, sizeof(f->host), "%s", target.host);
		f->port = target.port;
		f->state = F_OPENING;
		bufferevent_disable(bev, EV_READ);
		flow_start(f);
		return;
	}
	/* Bytes wait in the local buffer until the tunnel's handshake is done: a tunnel that
	 * fails before that hands its flows to another tunnel (failover), and bytes already
	 * given to the dead one would be lost. The handshake triggers this read again. */
	if (f->tn == NULL || f->stream_closed || !f->tn->handshake_done)
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
	if (ls->kind == FLOW_LOOPBACK || ls->kind == FLOW_TUN) {
		f->kind = FLOW_LOOPBACK; /* a tun connection is refused with an RST too */
		f->state = F_OPENING;
		if (ls->kind == FLOW_LOOPBACK) {
			snprintf(f->host, sizeof(f->host), "%s", ls->name);
			f->port = ls->port;
		} else if (tun_flow_target(d, fd, f->host, sizeof(f->host), &f->port) < 0) {
			flow_refuse(f, "not_protected", "client", "no protected name at this address");
			return;
		}
		flow_start(f);
		if (!f->dead && f->state == F_OPENING)
			bufferevent_enable(f->bev, EV_READ); /* queued until the 200 */
		return;
	}
	f->state = ls->kind == FLOW_SOCKS ? F_SOCKS_GREETING : F_HTTP_REQUEST;
	bufferevent_enable(f->bev, EV_READ);
}

/* A listener not yet serving (the caller sets ls->l, then listener_link); NULL on OOM. */
static struct listener *listener_new(struct daemon *d, enum flow_kind kind, const char *addr_text,
				     uint16_t port, const char *name)
{
	struct listener *ls = calloc(1, sizeof(*ls));
	if (ls == NULL)
		return NULL;
	ls->d = d;
	ls->kind = kind;
	ls->port = port;
	snprintf(ls->name, sizeof(ls->name), "%s", name != NULL ? name : "");
	snprintf(ls->addr_text, sizeof(ls->addr_text), "%s", addr_text);
	return ls;
}

static void listener_link(struct daemon *d, struct listener *ls)
{
	ls->next = d->listeners;
	d->listeners = ls;
}

int listen_on(struct daemon *d, enum flow_kind kind, const char *addr_text, uint16_t port,
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
	struct listener *ls = listener_new(d, kind, addr_text, port, name);
	if (ls == NULL)
		return SP_ERR_NOMEM;
	ls->l = evconnlistener_new_bind(d->base, on_accept, ls,
					LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
					    LEV_OPT_CLOSE_ON_EXEC,
					128, (struct sockaddr *)&ss, (int)sl);
	if (ls->l == NULL) {
		free(ls);
		return sp_diag_set(diag, SP_ERR_IO, "cannot listen on %s:%u: %s", addr_text, port,
				   strerror(errno));
	}
	listener_link(d, ls);
	return 0;
}

int listen_adopt(struct daemon *d, enum flow_kind kind, evutil_socket_t fd, const char *addr_text,
		 uint16_t port, struct sp_diag *diag)
{
	struct listener *ls = listener_new(d, kind, addr_text, port, NULL);
	if (ls == NULL)
		return SP_ERR_NOMEM;
	ls->l = evconnlistener_new(d->base, on_accept, ls, LEV_OPT_CLOSE_ON_FREE, -1, fd);
	if (ls->l == NULL) {
		free(ls);
		return sp_diag_set(diag, SP_ERR_IO, "cannot serve %s:%u", addr_text, port);
	}
	listener_link(d, ls);
	return 0;
}

int parse_listen(const char *text, char *host, size_t hsize, uint16_t *port,
			struct sp_diag *diag)
{
	if (sp_config_parse_address(text, host, hsize, port, diag) < 0)
		return SP_ERR_INVALID;
	return 0;
}

void on_reaper(evutil_socket_t fd, short what, void *arg)
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

