/*
 * connector/dataplane.c — see dataplane.h.
 *
 * Objects and lifetimes (all on the loop thread):
 *   struct tunnel_conn  one accepted TCP connection with its SSL, tunnel and join; freed by
 *                       conn_close, which first finishes every flow of the connection.
 *   struct flow         one stream; made on an allowed open request, freed from the
 *                       tunnel's on_closed (or conn_close). While a DNS query is in flight
 *                       the flow is only marked `orphaned` and the c-ares callback frees it.
 * Every handler that touches a tunnel ends with conn_flush(conn), which may free the
 * connection: nothing is touched after it.
 */
#include "connector/dataplane.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/ssl.h>

#include "connector/authorize.h"
#include "connector/relay_io.h"
#include "shared/config.h"
#include "shared/jwk.h"
#include "shared/log.h"
#include "shared/tls.h"
#include "shared/tunnel.h"
#include "shared/tunnel_tls.h"
#include "shared/wire.h"
#include "shared/clock.h"

#define MAX_TUNNELS 4096
#define HANDSHAKE_TIMEOUT_S 10
#define READ_CHUNK (64 * 1024) /* one inbound TLS buffer (SP_TLS_INBOUND_MAX) per recv */
#define SERVICE_READ_CHUNK (64 * 1024)
#define MAX_DNS_SOCKETS 32
/* After accept() fails for want of descriptors, the listeners pause this long. */
#define ACCEPT_PAUSE_MS 100
/* At most one "out of file descriptors" warning per this many seconds. */
#define FD_WARN_INTERVAL_S 5
/* A UDP flow drops datagrams from its service while this much waits for the tunnel. */
#define UDP_QUEUE_MAX (256 * 1024)

struct tunnel_conn;

enum flow_state { FLOW_RESOLVING = 1, FLOW_CONNECTING, FLOW_OPEN };

struct flow {
	struct dataplane *dp;
	struct tunnel_conn *conn; /* NULL once orphaned */
	int32_t stream;
	enum flow_state state;
	int fd;
	struct connector_decision decision;
	struct sp_resource resource; /* our copy, for the address rule */
	char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
	int proto_udp;
	struct event *read_ev;	/* service socket readable */
	struct event *write_ev; /* service socket writable (or connected) */
	struct event *idle_ev;	/* UDP: no datagram either way for udp_idle_timeout_ms */
	uint64_t udp_drops;	/* UDP datagrams dropped (queue full, socket full) */
	struct evbuffer *to_service;
	int remote_ended;
	int read_paused;
	uint8_t *pending_down; /* service bytes the stream queue did not take yet */
	size_t pending_len;
	int service_eof;
	int orphaned; /* closed while DNS was in flight: the callback frees it */
	const char *end_reason; /* a deny reason set when the connector cut the flow */
	uint64_t bytes_up, bytes_down;
	int64_t start_ms;
	int64_t opened_ms; /* when 200 was sent */
	char ip[INET6_ADDRSTRLEN];
	struct flow *prev, *next;
	/* on conn->dirty: tunnel bytes arrived during this read, written once it is done */
	int dirty;
	struct flow *dirty_next;
};

struct tunnel_conn {
	struct dataplane *dp;
	int fd;
	SSL *ssl;
	struct sp_tunnel *tunnel;
	struct sp_tunnel_tls *tt;
	struct event *read_ev, *write_ev, *handshake_timer;
	char jkt[SP_JWK_THUMBPRINT_LEN + 1];
	int have_jkt;
	char peer[SP_CONFIG_HOST_MAX + 16];
	struct flow *flows;
	struct flow *dirty; /* flows with new bytes for their service (see on_data) */
	struct tunnel_conn *prev, *next;
};

struct dns_watch {
	int fd;
	struct event *ev;
};

struct dataplane {
	struct connector_shared *shared;
	struct dataplane_options opts;
	struct event_base *base;
	SSL_CTX *tls_ctx;
	struct evconnlistener *listener;
	struct connector_relays *relays; /* control and data connections to the relays */
	struct event *relay_ev;          /* the reporter thread has a new relay token or list */
	struct evhttp *http;
	struct event *config_ev, *sigterm_ev, *sigint_ev, *drain_timer, *dns_timer;
	struct event *accept_timer; /* resumes the paused listeners (see on_accept_error) */
	int spare_fd;               /* /dev/null, given up to shed one queued connection */
	int64_t fd_warned_at;       /* wall time of the last "out of file descriptors" line */
	struct connector_config *config;
	struct connector_grant_cache grants; /* verified grants of `config` */
	ares_channel ares;
	int ares_ready;
	struct dns_watch dns[MAX_DNS_SOCKETS];
	size_t dns_pending;
	int resolving_inline; /* inside ares_getaddrinfo, itself inside a tunnel callback */
	struct tunnel_conn *conns;
	size_t conn_count;
	int draining;
	/* counters for /metrics */
	uint64_t tunnels_total, flows_allowed, flows_denied, flows_cut, bytes_up, bytes_down;
	uint64_t handshake_failures;
	uint64_t fd_exhausted; /* accepts and dials that failed with EMFILE/ENFILE */
	uint64_t denied_by_reason[SP_TUNNEL_REASON_UNKNOWN + 1];
};

static void conn_flush(struct tunnel_conn *conn);
static void conn_close(struct tunnel_conn *conn, const char *why);

/* ---- flow events ---- */

static void copy_text(char *dst, size_t size, const char *src)
{
	size_t n = src != NULL ? strnlen(src, size - 1) : 0;
	if (n > 0)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static void emit_flow_event(struct dataplane *dp, const struct connector_decision *d,
			    const char *flow_id, int udp, int allowed, const char *reason,
			    const char *ip, uint64_t up, uint64_t down, int64_t start_ms)
{
	struct connector_flow_event ev;
	memset(&ev, 0, sizeof(ev));
	copy_text(ev.flow_id, sizeof(ev.flow_id), flow_id);
	ev.time = start_ms / 1000;
	ev.protocol = udp ? "udp" : "tcp";
	ev.allowed = allowed;
	ev.reason = reason;
	copy_text(ev.user_id, sizeof(ev.user_id), d->user_id);
	copy_text(ev.device_id, sizeof(ev.device_id), d->device_id);
	copy_text(ev.session_id, sizeof(ev.session_id), d->session_id);
	copy_text(ev.resource_id, sizeof(ev.resource_id), d->resource_id);
	copy_text(ev.destination_host, sizeof(ev.destination_host), d->host);
	copy_text(ev.destination_ip, sizeof(ev.destination_ip), ip);
	ev.destination_port = d->port;
	ev.bytes_up = up;
	ev.bytes_down = down;
	int64_t dur = sp_realtime_ms() - start_ms;
	ev.duration_ms = dur > 0 ? (uint64_t)dur : 0;
	connector_flow_queue_push(&dp->shared->flows, &ev);
}

static void count_denial(struct dataplane *dp, enum sp_tunnel_reason reason)
{
	dp->flows_denied++;
	if ((size_t)reason < sizeof(dp->denied_by_reason) / sizeof(dp->denied_by_reason[0]))
		dp->denied_by_reason[reason]++;
}

/* ---- flows ---- */

static void flow_unlink(struct flow *f)
{
	struct tunnel_conn *conn = f->conn;
	if (conn == NULL)
		return;
	if (f->dirty) {
		struct flow **link = &conn->dirty;
		while (*link != f)
			link = &(*link)->dirty_next;
		*link = f->dirty_next;
		f->dirty = 0;
		f->dirty_next = NULL;
	}
	if (f->prev != NULL)
		f->prev->next = f->next;
	else
		conn->flows = f->next;
	if (f->next != NULL)
		f->next->prev = f->prev;
	f->prev = f->next = NULL;
	f->conn = NULL;
}

static void flow_release(struct flow *f)
{
	if (f->read_ev != NULL)
		event_free(f->read_ev);
	if (f->write_ev != NULL)
		event_free(f->write_ev);
	if (f->idle_ev != NULL)
		event_free(f->idle_ev);
	f->read_ev = f->write_ev = f->idle_ev = NULL;
	if (f->fd != -1)
		close(f->fd);
	f->fd = -1;
	if (f->to_service != NULL)
		evbuffer_free(f->to_service);
	f->to_service = NULL;
	sp_resource_free(&f->resource);
	free(f->pending_down);
	f->pending_down = NULL;
	if (!f->orphaned)
		free(f);
}

/* The stream is gone: report it, detach, free (or leave to the DNS callback). */
static void flow_finish(struct dataplane *dp, struct flow *f, uint32_t error_code)
{
	int allowed = f->state == FLOW_OPEN && f->end_reason == NULL;
	const char *reason = f->end_reason;
	if (f->state != FLOW_OPEN && reason == NULL)
		reason = "connect_failed"; /* the client went away while we dialed */
	if (f->state == FLOW_OPEN || f->end_reason != NULL)
		emit_flow_event(dp, &f->decision, f->flow_id, f->proto_udp, allowed, reason, f->ip,
				f->bytes_up, f->bytes_down, f->start_ms);
	(void)error_code;
	flow_unlink(f);
	if (f->state == FLOW_RESOLVING) {
		f->orphaned = 1; /* c-ares still holds a pointer to it */
		flow_release(f);
		return;
	}
	flow_release(f);
}

/* Refuses a stream that has a flow (before 200). */
/*
 * Counts a failure for want of descriptors (EMFILE/ENFILE) and says so at most once per
 * FD_WARN_INTERVAL_S, so an exhausted connector is visible without flooding its log.
 */
static void fd_shortage(struct dataplane *dp, int err)
{
	if (err == EMFILE || err == ENFILE)
		dp->fd_exhausted++;
	int64_t now = sp_realtime_ms() / 1000;
	if (now - dp->fd_warned_at < FD_WARN_INTERVAL_S)
		return;
	dp->fd_warned_at = now;
	SP_LOG(SP_LOG_WARN,
	       err == EMFILE || err == ENFILE
		   ? "out of file descriptors: refusing new tunnels and flows until some close "
		     "(raise the open-files limit)"
		   : "out of kernel memory: refusing new tunnels for a moment",
	       SP_LOG_STR("error", strerror(err)), SP_LOG_UINT("tunnels", dp->conn_count));
}

static void flow_refuse(struct flow *f, enum sp_tunnel_reason reason, const char *detail)
{
	struct tunnel_conn *conn = f->conn;
	struct dataplane *dp = conn->dp;
	SP_LOG(SP_LOG_INFO, "flow denied", SP_LOG_STR("flow", f->flow_id),
	       SP_LOG_STR("reason", sp_tunnel_reason_name(reason)), SP_LOG_STR("detail", detail),
	       SP_LOG_STR("host", f->decision.host), SP_LOG_UINT("port", f->decision.port));
	count_denial(dp, reason);
	f->end_reason = sp_tunnel_reason_name(reason);
	int status = reason == SP_TUNNEL_REASON_DNS_ERROR || reason == SP_TUNNEL_REASON_CONNECT_FAILED
			 ? 502
			 : reason == SP_TUNNEL_REASON_CONNECTOR_UNAVAILABLE ? 503 : 403;
	if (sp_tunnel_refuse(conn->tunnel, f->stream, status, reason) < 0)
		sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_CANCEL);
}

static void service_try_shutdown_write(struct flow *f)
{
	if (f->remote_ended && evbuffer_get_length(f->to_service) == 0 && f->fd != -1)
		shutdown(f->fd, SHUT_WR);
}

static void flow_udp_touch(struct flow *f)
{
	struct dataplane *dp = f->dp;
	struct timeval tv = {.tv_sec = dp->opts.udp_idle_timeout_ms / 1000,
			     .tv_usec = (dp->opts.udp_idle_timeout_ms % 1000) * 1000};
	if (f->idle_ev != NULL)
		event_add(f->idle_ev, &tv);
}

/*
 * UDP: the stream bytes are length-prefixed datagrams (shared/wire.h); each whole one is
 * sent to the service. A datagram the socket does not take is dropped (UDP semantics);
 * window is given back for every frame taken out, so at most one partial frame waits.
 */
static void flow_udp_deliver(struct flow *f)
{
	struct tunnel_conn *conn = f->conn;
	for (;;) {
		size_t have = evbuffer_get_length(f->to_service);
		if (have < 2)
			return;
		uint8_t head[2];
		evbuffer_copyout(f->to_service, head, 2);
		size_t frame = 2 + (((size_t)head[0] << 8) | head[1]);
		if (have < frame)
			return;
		const uint8_t *data = evbuffer_pullup(f->to_service, (ev_ssize_t)frame);
		const uint8_t *payload = NULL;
		size_t payload_len = 0;
		if (data == NULL ||
		    sp_udp_frame_decode(data, frame, &payload, &payload_len) != (int)frame) {
			sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_PROTOCOL_ERROR);
			return;
		}
		if (send(f->fd, payload, payload_len, MSG_NOSIGNAL) == -1)
			f->udp_drops++; /* full socket buffer, or an ICMP error: UDP semantics */
		else
			f->bytes_up += payload_len;
		conn->dp->bytes_up += payload_len;
		evbuffer_drain(f->to_service, frame);
		sp_tunnel_consumed(conn->tunnel, f->stream, frame);
		flow_udp_touch(f);
	}
}

/* Writes queued tunnel bytes to the service; returns window to the client for them. */
static void flow_write_service(struct flow *f)
{
	struct tunnel_conn *conn = f->conn;
	if (f->proto_udp) {
		flow_udp_deliver(f);
		return;
	}
	while (evbuffer_get_length(f->to_service) > 0) {
		int n = evbuffer_write(f->to_service, f->fd);
		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				break;
			sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_CANCEL);
			return;
		}
		if (n == 0)
			break;
		f->bytes_up += (uint64_t)n;
		conn->dp->bytes_up += (uint64_t)n;
		sp_tunnel_consumed(conn->tunnel, f->stream, (size_t)n);
	}
	if (evbuffer_get_length(f->to_service) > 0)
		event_add(f->write_ev, NULL);
	else {
		event_del(f->write_ev);
		service_try_shutdown_write(f);
	}
}

static void on_service_writable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct flow *f = arg;
	struct tunnel_conn *conn = f->conn;
	flow_write_service(f);
	conn_flush(conn);
}

/*
 * UDP service -> tunnel: each datagram becomes one frame. While more than UDP_QUEUE_MAX
 * waits for the tunnel, new datagrams are dropped rather than queued (bounded, and no
 * head-of-line wait for a datagram flow).
 */
static void flow_udp_readable(struct flow *f)
{
	struct tunnel_conn *conn = f->conn;
	struct dataplane *dp = conn->dp;
	uint8_t frame[2 + SP_UDP_DATAGRAM_MAX];
	for (int round = 0; round < 16; round++) {
		ssize_t n = recv(f->fd, frame + 2, SP_UDP_DATAGRAM_MAX, 0);
		if (n == -1)
			return; /* EAGAIN, or an ICMP error reported on the connected socket */
		size_t len = (size_t)n;
		if (f->pending_len > 0 ||
		    sp_tunnel_queued(conn->tunnel, f->stream) + len + 2 > UDP_QUEUE_MAX) {
			f->udp_drops++;
			continue;
		}
		frame[0] = (uint8_t)(len >> 8);
		frame[1] = (uint8_t)(len & 0xff);
		size_t accepted = 0;
		if (sp_tunnel_write(conn->tunnel, f->stream, frame, len + 2, &accepted) < 0) {
			sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_CANCEL);
			return;
		}
		if (accepted < len + 2) {
			/* the rest of this frame must follow it: keep it for on_writable */
			if (f->pending_down == NULL)
				f->pending_down = malloc(2 + SP_UDP_DATAGRAM_MAX);
			if (f->pending_down == NULL) {
				sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_INTERNAL_ERROR);
				return;
			}
			f->pending_len = len + 2 - accepted;
			memcpy(f->pending_down, frame + accepted, f->pending_len);
		}
		f->bytes_down += len;
		dp->bytes_down += len;
		flow_udp_touch(f);
	}
}

/*
 * Service -> tunnel. A chunk the stream queue does not take whole is kept in
 * pending_down and reading pauses (backpressure); the tunnel's on_writable, which fires
 * because that write was short, writes the rest and resumes reading.
 */
static void on_service_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct flow *f = arg;
	struct tunnel_conn *conn = f->conn;
	struct dataplane *dp = conn->dp;
	if (f->pending_len > 0) {
		event_del(f->read_ev);
		f->read_paused = 1;
		return;
	}
	if (f->proto_udp) {
		flow_udp_readable(f);
		conn_flush(conn);
		return;
	}
	uint8_t buf[SERVICE_READ_CHUNK];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	if (n == -1) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_CANCEL);
	} else if (n == 0) {
		event_del(f->read_ev);
		f->service_eof = 1;
		sp_tunnel_end(conn->tunnel, f->stream);
	} else {
		size_t accepted = 0;
		if (sp_tunnel_write(conn->tunnel, f->stream, buf, (size_t)n, &accepted) < 0) {
			sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_CANCEL);
		} else {
			f->bytes_down += accepted;
			dp->bytes_down += accepted;
			if (accepted < (size_t)n) {
				if (f->pending_down == NULL)
					f->pending_down = malloc(SERVICE_READ_CHUNK);
				if (f->pending_down == NULL) {
					sp_tunnel_reset(conn->tunnel, f->stream,
							SP_TUNNEL_INTERNAL_ERROR);
				} else {
					f->pending_len = (size_t)n - accepted;
					memcpy(f->pending_down, buf + accepted, f->pending_len);
					event_del(f->read_ev);
					f->read_paused = 1;
				}
			}
		}
	}
	conn_flush(conn);
}

/* No datagram either way for udp_idle_timeout_ms: the flow ends (RST_STREAM NO_ERROR). */
static void on_udp_idle(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct flow *f = arg;
	struct tunnel_conn *conn = f->conn;
	SP_LOG(SP_LOG_DEBUG, "udp flow idle", SP_LOG_STR("flow", f->flow_id));
	sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_NO_ERROR);
	conn_flush(conn);
}

static void flow_opened(struct flow *f)
{
	struct tunnel_conn *conn = f->conn;
	struct dataplane *dp = conn->dp;
	int one = 1;
	if (!f->proto_udp)
		setsockopt(f->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	else if ((f->idle_ev = evtimer_new(dp->base, on_udp_idle, f)) == NULL) {
		sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_INTERNAL_ERROR);
		return;
	}
	if (f->write_ev != NULL) /* the connect watch (TCP) */
		event_free(f->write_ev);
	f->write_ev = event_new(dp->base, f->fd, EV_WRITE, on_service_writable, f);
	f->read_ev = event_new(dp->base, f->fd, EV_READ | EV_PERSIST, on_service_readable, f);
	f->to_service = evbuffer_new();
	if (f->write_ev == NULL || f->read_ev == NULL || f->to_service == NULL ||
	    sp_tunnel_accept(conn->tunnel, f->stream) < 0) {
		sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_INTERNAL_ERROR);
		return;
	}
	f->state = FLOW_OPEN;
	f->opened_ms = sp_realtime_ms();
	dp->flows_allowed++;
	event_add(f->read_ev, NULL);
	if (f->proto_udp)
		flow_udp_touch(f);
	SP_LOG(SP_LOG_INFO, "flow open", SP_LOG_STR("flow", f->flow_id),
	       SP_LOG_STR("user", f->decision.user_id), SP_LOG_STR("resource", f->decision.resource_id),
	       SP_LOG_STR("host", f->decision.host), SP_LOG_STR("ip", f->ip),
	       SP_LOG_UINT("port", f->decision.port),
	       SP_LOG_INT("setup_ms", f->opened_ms - f->start_ms));
}

static void on_service_connected(evutil_socket_t fd, short what, void *arg)
{
	struct flow *f = arg;
	struct tunnel_conn *conn = f->conn;
	if (what & EV_TIMEOUT) {
		flow_refuse(f, SP_TUNNEL_REASON_CONNECT_FAILED, "connect timed out");
		conn_flush(conn);
		return;
	}
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err != 0) {
		flow_refuse(f, SP_TUNNEL_REASON_CONNECT_FAILED, strerror(err));
		conn_flush(conn);
		return;
	}
	flow_opened(f);
	conn_flush(conn);
}

/* Dials family/addr; the answer comes to on_service_connected. */
static void flow_connect(struct flow *f, int family, const uint8_t *addr)
{
	struct tunnel_conn *conn = f->conn;
	struct dataplane *dp = conn->dp;
	if (!connector_address_allowed(&f->resource, family, addr)) {
		flow_refuse(f, SP_TUNNEL_REASON_NO_POLICY,
			    "the address is not allowed for this resource (DNS-rebinding rule)");
		return;
	}
	struct sockaddr_storage ss;
	socklen_t sslen;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(f->decision.port);
		memcpy(&sin->sin_addr, addr, 4);
		sslen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(f->decision.port);
		memcpy(&sin6->sin6_addr, addr, 16);
		sslen = sizeof(*sin6);
	}
	inet_ntop(family, addr, f->ip, sizeof(f->ip));
	f->fd = socket(family, (f->proto_udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC,
		       0);
	if (f->fd == -1) {
		if (errno == EMFILE || errno == ENFILE) {
			fd_shortage(dp, errno);
			flow_refuse(f, SP_TUNNEL_REASON_CONNECT_FAILED,
				    "out of file descriptors (raise the open-files limit)");
		} else {
			flow_refuse(f, SP_TUNNEL_REASON_CONNECT_FAILED, strerror(errno));
		}
		return;
	}
	f->state = FLOW_CONNECTING;
	if (connect(f->fd, (struct sockaddr *)&ss, sslen) == -1 && errno != EINPROGRESS) {
		flow_refuse(f, SP_TUNNEL_REASON_CONNECT_FAILED, strerror(errno));
		return;
	}
	if (f->proto_udp) {
		flow_opened(f); /* a connected UDP socket is ready at once */
		return;
	}
	f->write_ev = event_new(dp->base, f->fd, EV_WRITE, on_service_connected, f);
	struct timeval tv = {.tv_sec = dp->opts.connect_timeout_ms / 1000,
			     .tv_usec = (dp->opts.connect_timeout_ms % 1000) * 1000};
	if (f->write_ev == NULL || event_add(f->write_ev, &tv) < 0)
		flow_refuse(f, SP_TUNNEL_REASON_CONNECT_FAILED, "out of memory");
}

/* ---- DNS (c-ares inside the loop) ---- */

static void dns_process(evutil_socket_t fd, short what, void *arg)
{
	struct dataplane *dp = arg;
	ares_socket_t r = (what & EV_READ) ? fd : ARES_SOCKET_BAD;
	ares_socket_t w = (what & EV_WRITE) ? fd : ARES_SOCKET_BAD;
	if (what & EV_TIMEOUT)
		r = w = ARES_SOCKET_BAD;
	ares_process_fd(dp->ares, r, w);
}

static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dataplane *dp = data;
	struct dns_watch *slot = NULL, *free_slot = NULL;
	for (size_t i = 0; i < MAX_DNS_SOCKETS; i++) {
		if (dp->dns[i].ev != NULL && dp->dns[i].fd == fd)
			slot = &dp->dns[i];
		else if (dp->dns[i].ev == NULL && free_slot == NULL)
			free_slot = &dp->dns[i];
	}
	if (slot != NULL) {
		event_free(slot->ev);
		slot->ev = NULL;
	}
	if (!readable && !writable)
		return;
	if (slot == NULL)
		slot = free_slot;
	if (slot == NULL)
		return; /* c-ares times the query out */
	short what = (short)(EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	slot->fd = fd;
	slot->ev = event_new(dp->base, fd, what, dns_process, dp);
	if (slot->ev != NULL)
		event_add(slot->ev, NULL);
}

static void on_dns_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dataplane *dp = arg;
	ares_process_fd(dp->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	if (dp->dns_pending > 0) {
		struct timeval tv = {0, 100000};
		event_add(dp->dns_timer, &tv);
	}
}

static void on_resolved(void *arg, int status, int timeouts, struct ares_addrinfo *result)
{
	(void)timeouts;
	struct flow *f = arg;
	struct tunnel_conn *conn = f->conn;
	struct dataplane *dp = f->dp;
	dp->dns_pending--;
	if (f->orphaned) {
		/* the stream ended while we resolved */
		ares_freeaddrinfo(result);
		free(f);
		return;
	}
	/* c-ares answers from the hosts file (or fails) synchronously, inside our
	 * on_open_request: the tunnel must not be flushed from there, the caller does it. */
	struct tunnel_conn *flush = dp->resolving_inline ? NULL : conn;
	f->state = FLOW_CONNECTING; /* no longer referenced by c-ares */
	if (status != ARES_SUCCESS || result == NULL || result->nodes == NULL) {
		ares_freeaddrinfo(result);
		flow_refuse(f, SP_TUNNEL_REASON_DNS_ERROR, ares_strerror(status));
		conn_flush(flush);
		return;
	}
	/* Every answer must be allowed: one rebinding answer refuses the flow. */
	int family = 0;
	uint8_t first[16];
	int refused = 0;
	for (struct ares_addrinfo_node *n = result->nodes; n != NULL; n = n->ai_next) {
		uint8_t a[16];
		memset(a, 0, sizeof(a));
		if (n->ai_family == AF_INET)
			memcpy(a, &((struct sockaddr_in *)(void *)n->ai_addr)->sin_addr, 4);
		else if (n->ai_family == AF_INET6)
			memcpy(a, &((struct sockaddr_in6 *)(void *)n->ai_addr)->sin6_addr, 16);
		else
			continue;
		if (!connector_address_allowed(&f->resource, n->ai_family, a)) {
			inet_ntop(n->ai_family, a, f->ip, sizeof(f->ip));
			refused = 1;
			break;
		}
		if (family == 0) {
			family = n->ai_family;
			memcpy(first, a, 16);
		}
	}
	ares_freeaddrinfo(result);
	if (refused || family == 0) {
		flow_refuse(f, refused ? SP_TUNNEL_REASON_NO_POLICY : SP_TUNNEL_REASON_DNS_ERROR,
			    refused ? "a DNS answer is not allowed for this resource (DNS-rebinding rule)"
				    : "no usable address");
		conn_flush(flush);
		return;
	}
	flow_connect(f, family, first);
	conn_flush(flush);
}

/* ---- tunnel callbacks ---- */

static int conn_peer_jkt(struct tunnel_conn *conn)
{
	if (conn->have_jkt)
		return 0;
	EVP_PKEY *peer = NULL;
	int r = sp_tls_peer_key(conn->ssl, &peer);
	if (r == 0)
		r = sp_jwk_thumbprint(peer, conn->jkt);
	EVP_PKEY_free(peer);
	if (r == 0)
		conn->have_jkt = 1;
	return r;
}

static void on_open_request(struct sp_tunnel *t, int32_t stream,
			    const struct sp_tunnel_open_request *req, void *user)
{
	struct tunnel_conn *conn = user;
	struct dataplane *dp = conn->dp;
	int64_t start = sp_realtime_ms();
	struct connector_decision d;
	memset(&d, 0, sizeof(d));
	if (dp->config == NULL || dp->draining) {
		d.reason = SP_TUNNEL_REASON_CONNECTOR_UNAVAILABLE;
		snprintf(d.detail, sizeof(d.detail), "%s",
			 dp->draining ? "draining" : "no config from the controller yet");
	} else if (conn_peer_jkt(conn) < 0) {
		d.reason = SP_TUNNEL_REASON_BAD_GRANT;
		snprintf(d.detail, sizeof(d.detail), "no peer key");
	} else if (connector_authorize_cached(dp->config, &dp->grants, conn->jkt, req,
						 start / 1000, &d) < 0) {
		d.reason = SP_TUNNEL_REASON_CONNECTOR_UNAVAILABLE;
		snprintf(d.detail, sizeof(d.detail), "out of memory");
	}
	struct flow *f = NULL;
	if (d.reason == SP_TUNNEL_REASON_NONE) {
		f = calloc(1, sizeof(*f));
		if (f == NULL || sp_resource_copy(&d.resource->resource, &f->resource) < 0) {
			free(f);
			f = NULL;
			d.reason = SP_TUNNEL_REASON_OVERLOADED;
		}
	}
	if (f == NULL) {
		SP_LOG(SP_LOG_INFO, "flow denied", SP_LOG_STR("flow", req->flow_id),
		       SP_LOG_STR("reason", sp_tunnel_reason_name(d.reason)),
		       SP_LOG_STR("detail", d.detail), SP_LOG_STR("peer", conn->peer));
		count_denial(dp, d.reason);
		emit_flow_event(dp, &d, req->flow_id, req->proto == SP_TUNNEL_PROTO_UDP, 0,
				sp_tunnel_reason_name(d.reason), "", 0, 0, start);
		int status = d.reason == SP_TUNNEL_REASON_CONNECTOR_UNAVAILABLE ||
				     d.reason == SP_TUNNEL_REASON_OVERLOADED
				 ? 503
				 : d.reason == SP_TUNNEL_REASON_BAD_REQUEST ? 400 : 403;
		sp_tunnel_refuse(t, stream, status, d.reason);
		return;
	}
	f->decision = d;
	f->decision.resource = NULL; /* points into a config that may be replaced */
	f->dp = dp;
	f->conn = conn;
	f->stream = stream;
	f->fd = -1;
	f->start_ms = start;
	f->proto_udp = req->proto == SP_TUNNEL_PROTO_UDP;
	copy_text(f->flow_id, sizeof(f->flow_id), req->flow_id);
	f->next = conn->flows;
	if (conn->flows != NULL)
		conn->flows->prev = f;
	conn->flows = f;
	sp_tunnel_set_stream_user(t, stream, f);
	if (d.host_is_ip) {
		flow_connect(f, d.host_family, d.host_addr);
		return;
	}
	f->state = FLOW_RESOLVING;
	char port[8];
	snprintf(port, sizeof(port), "%u", (unsigned)d.port);
	struct ares_addrinfo_hints hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = f->proto_udp ? SOCK_DGRAM : SOCK_STREAM;
	dp->dns_pending++;
	dp->resolving_inline = 1;
	ares_getaddrinfo(dp->ares, f->decision.host, port, &hints, on_resolved, f);
	dp->resolving_inline = 0;
	/* the callback may already have run (cache, hosts file, immediate error) */
	if (dp->dns_pending > 0 && !evtimer_pending(dp->dns_timer, NULL)) {
		struct timeval tv = {0, 100000};
		event_add(dp->dns_timer, &tv);
	}
}

static void on_data(struct sp_tunnel *t, int32_t stream, const uint8_t *data, size_t len,
		    void *user)
{
	(void)user;
	struct flow *f = sp_tunnel_stream_user(t, stream);
	if (f == NULL || f->state != FLOW_OPEN) {
		sp_tunnel_consumed(t, stream, len);
		return;
	}
	if (evbuffer_add(f->to_service, data, len) < 0) {
		sp_tunnel_reset(t, stream, SP_TUNNEL_INTERNAL_ERROR);
		return;
	}
	/*
	 * Written when the whole read is processed (conn_write_services), not here: frames
	 * and TLS records do not line up, so writing per callback would cost a write per
	 * fragment (often a 16 KiB one and a 9-byte one).
	 */
	if (!f->dirty) {
		f->dirty = 1;
		f->dirty_next = f->conn->dirty;
		f->conn->dirty = f;
	}
}

/* Writes what on_data queued during one read of the tunnel socket. */
static void conn_write_services(struct tunnel_conn *conn)
{
	while (conn->dirty != NULL) {
		struct flow *f = conn->dirty;
		conn->dirty = f->dirty_next;
		f->dirty = 0;
		f->dirty_next = NULL;
		flow_write_service(f);
	}
}

static void on_remote_end(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)user;
	struct flow *f = sp_tunnel_stream_user(t, stream);
	if (f == NULL)
		return;
	f->remote_ended = 1;
	if (f->state == FLOW_OPEN && f->proto_udp)
		sp_tunnel_end(t, stream); /* the client is done with this datagram flow */
	else if (f->state == FLOW_OPEN)
		service_try_shutdown_write(f);
}

static void on_writable(struct sp_tunnel *t, int32_t stream, void *user)
{
	(void)user;
	struct flow *f = sp_tunnel_stream_user(t, stream);
	if (f == NULL || f->state != FLOW_OPEN)
		return;
	if (f->pending_len > 0) {
		size_t accepted = 0;
		if (sp_tunnel_write(t, stream, f->pending_down, f->pending_len, &accepted) < 0)
			return;
		f->bytes_down += accepted;
		f->conn->dp->bytes_down += accepted;
		f->pending_len -= accepted;
		if (f->pending_len > 0) {
			memmove(f->pending_down, f->pending_down + accepted, f->pending_len);
			return; /* still short: on_writable comes again */
		}
	}
	if (f->read_paused && f->read_ev != NULL) {
		f->read_paused = 0;
		event_add(f->read_ev, NULL);
	}
}

static void on_closed(struct sp_tunnel *t, int32_t stream, uint32_t error_code, void *user)
{
	struct tunnel_conn *conn = user;
	struct flow *f = sp_tunnel_stream_user(t, stream);
	if (f != NULL)
		flow_finish(conn->dp, f, error_code);
}

static const struct sp_tunnel_callbacks tunnel_callbacks = {
	.on_open_request = on_open_request,
	.on_data = on_data,
	.on_remote_end = on_remote_end,
	.on_writable = on_writable,
	.on_closed = on_closed,
};

/* ---- tunnel connections ---- */

static void conn_close(struct tunnel_conn *conn, const char *why)
{
	struct dataplane *dp = conn->dp;
	SP_LOG(SP_LOG_DEBUG, "tunnel closed", SP_LOG_STR("peer", conn->peer),
	       SP_LOG_STR("why", why));
	while (conn->flows != NULL) {
		struct flow *f = conn->flows;
		if (f->state == FLOW_OPEN && f->end_reason == NULL)
			f->end_reason = NULL; /* ended with its tunnel: still an allowed flow */
		flow_finish(dp, f, SP_TUNNEL_CANCEL);
	}
	if (conn->prev != NULL)
		conn->prev->next = conn->next;
	else
		dp->conns = conn->next;
	if (conn->next != NULL)
		conn->next->prev = conn->prev;
	dp->conn_count--;
	if (conn->read_ev != NULL)
		event_free(conn->read_ev);
	if (conn->write_ev != NULL)
		event_free(conn->write_ev);
	if (conn->handshake_timer != NULL)
		event_free(conn->handshake_timer);
	sp_tunnel_tls_free(conn->tt);
	sp_tunnel_free(conn->tunnel);
	SSL_free(conn->ssl);
	close(conn->fd);
	free(conn);
	if (dp->draining && dp->conns == NULL)
		event_base_loopexit(dp->base, NULL);
}

/* Moves tunnel output to the socket. 0, or < 0 for a dead connection. */
static int conn_pump(struct tunnel_conn *conn)
{
	struct sp_diag d = {{0}};
	for (;;) {
		int r = sp_tunnel_tls_flush(conn->tt, &d);
		if (r < 0)
			return r;
		const uint8_t *data = NULL;
		size_t len = 0;
		sp_tunnel_tls_outbound_view(conn->tt, &data, &len);
		if (len == 0)
			break;
		ssize_t n = send(conn->fd, data, len, MSG_NOSIGNAL);
		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
				event_add(conn->write_ev, NULL);
				return 0;
			}
			return SP_ERR_IO;
		}
		sp_tunnel_tls_outbound_consume(conn->tt, (size_t)n);
	}
	event_del(conn->write_ev);
	return 0;
}

static void conn_flush(struct tunnel_conn *conn)
{
	if (conn == NULL)
		return;
	if (conn_pump(conn) < 0) {
		conn_close(conn, "send failed");
		return;
	}
	if (sp_tunnel_is_done(conn->tunnel))
		conn_close(conn, "tunnel finished");
}

static void on_conn_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct tunnel_conn *conn = arg;
	uint8_t buf[READ_CHUNK];
	for (int rounds = 0; rounds < 8; rounds++) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == -1) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				break;
			conn_close(conn, strerror(errno));
			return;
		}
		if (n == 0) {
			conn_close(conn, "peer closed");
			return;
		}
		size_t off = 0;
		int stalls = 0;
		while (off < (size_t)n) {
			size_t used = 0;
			struct sp_diag d = {{0}};
			int r = sp_tunnel_tls_recv(conn->tt, buf + off, (size_t)n - off, &used, &d);
			if (r < 0) {
				if (!sp_tunnel_tls_handshake_done(conn->tt))
					conn->dp->handshake_failures++;
				SP_LOG(SP_LOG_INFO, "tunnel error", SP_LOG_STR("peer", conn->peer),
				       SP_LOG_STR("detail", d.message));
				conn_pump(conn);
				conn_close(conn, "protocol error");
				return;
			}
			off += used;
			if (used == 0) {
				if (conn_pump(conn) < 0 || ++stalls > 4) {
					conn_close(conn, "stalled");
					return;
				}
			} else {
				stalls = 0;
			}
		}
		if ((size_t)n < sizeof(buf))
			break;
	}
	conn_write_services(conn);
	conn_flush(conn);
}

static void on_conn_writable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_flush(arg);
}

static void on_handshake_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct tunnel_conn *conn = arg;
	if (!sp_tunnel_tls_handshake_done(conn->tt)) {
		conn->dp->handshake_failures++;
		conn_close(conn, "handshake timeout");
	}
}

/*
 * Serves a tunnel on a connected socket: accepted on the direct listener, or a relay data
 * connection after its preamble (connector/relay_io.c). Takes fd; peer labels the logs.
 */
static void tunnel_adopt(void *arg, int fd, const char *peer)
{
	struct dataplane *dp = arg;
	if (dp->conn_count >= MAX_TUNNELS || dp->draining) {
		close(fd);
		return;
	}
	struct tunnel_conn *conn = calloc(1, sizeof(*conn));
	if (conn == NULL) {
		close(fd);
		return;
	}
	conn->dp = dp;
	conn->fd = fd;
	snprintf(conn->peer, sizeof(conn->peer), "%s", peer);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (sp_tls_conn_new_memory(dp->tls_ctx, &conn->ssl) < 0 ||
	    sp_tunnel_new(SP_TUNNEL_SERVER, &tunnel_callbacks, conn, NULL, &conn->tunnel) < 0 ||
	    sp_tunnel_tls_new(conn->ssl, conn->tunnel, &conn->tt) < 0)
		goto fail;
	conn->read_ev = event_new(dp->base, fd, EV_READ | EV_PERSIST, on_conn_readable, conn);
	conn->write_ev = event_new(dp->base, fd, EV_WRITE, on_conn_writable, conn);
	conn->handshake_timer = evtimer_new(dp->base, on_handshake_timer, conn);
	if (conn->read_ev == NULL || conn->write_ev == NULL || conn->handshake_timer == NULL)
		goto fail;
	struct timeval tv = {HANDSHAKE_TIMEOUT_S, 0};
	event_add(conn->handshake_timer, &tv);
	event_add(conn->read_ev, NULL);
	conn->next = dp->conns;
	if (dp->conns != NULL)
		dp->conns->prev = conn;
	dp->conns = conn;
	dp->conn_count++;
	dp->tunnels_total++;
	conn_flush(conn);
	return;
fail:
	if (conn->read_ev != NULL)
		event_free(conn->read_ev);
	if (conn->write_ev != NULL)
		event_free(conn->write_ev);
	if (conn->handshake_timer != NULL)
		event_free(conn->handshake_timer);
	sp_tunnel_tls_free(conn->tt);
	sp_tunnel_free(conn->tunnel);
	SSL_free(conn->ssl);
	close(fd);
	free(conn);
}

static void on_accept(struct evconnlistener *listener, evutil_socket_t fd, struct sockaddr *addr,
		      int addrlen, void *arg)
{
	(void)listener;
	(void)addrlen;
	char host[INET6_ADDRSTRLEN] = "?";
	char peer[INET6_ADDRSTRLEN + 8];
	int port = 0;
	if (addr->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)addr)->sin_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)(void *)addr)->sin_port);
	} else if (addr->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)addr)->sin6_addr, host,
			  sizeof(host));
		port = ntohs(((struct sockaddr_in6 *)(void *)addr)->sin6_port);
	}
	snprintf(peer, sizeof(peer), "%s:%d", host, port);
	tunnel_adopt(arg, fd, peer);
}

static void on_relay_update(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dataplane *dp = arg;
	connector_relays_update(dp->relays);
}

/* ---- config handoff and revocation ---- */

static const char *flow_revoked(const struct connector_config *cfg, const struct flow *f,
				const char **detail)
{
	*detail = "user, device or session revoked";
	if (connector_id_set_contains(&cfg->revoked_users, f->decision.user_id) ||
	    connector_id_set_contains(&cfg->revoked_devices, f->decision.device_id) ||
	    connector_id_set_contains(&cfg->revoked_sessions, f->decision.session_id))
		return "revoked";
	/* access ended: the user lost the resource after the grant was issued */
	int64_t ended = connector_access_revoked_at(cfg, f->decision.user_id,
						    f->decision.resource_id);
	if (ended >= 0 && f->decision.grant_issued_at <= ended) {
		*detail = "access ended";
		return "revoked";
	}
	*detail = "resource removed";
	const struct connector_resource *own =
		connector_config_find_resource(cfg, f->decision.resource_id);
	if (own == NULL)
		return "no_policy";
	/* the resource's ports were narrowed: the flow's port may no longer be allowed */
	if (!sp_resource_allows(&own->resource,
				f->proto_udp ? SP_RESOURCE_PROTOCOL_UDP : SP_RESOURCE_PROTOCOL_TCP,
				f->decision.port)) {
		*detail = "port no longer allowed";
		return "port_not_allowed";
	}
	return NULL;
}

static void on_config(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dataplane *dp = arg;
	struct connector_config *cfg = connector_shared_take_config(dp->shared);
	if (cfg == NULL)
		return;
	connector_grant_cache_clear(&dp->grants);
	connector_config_free(dp->config);
	dp->config = cfg;
	atomic_store(&dp->shared->has_config, 1);
	/* Cut every live flow the new config no longer allows (within the loop iteration). */
	struct tunnel_conn *conn = dp->conns;
	while (conn != NULL) {
		struct tunnel_conn *next_conn = conn->next;
		int cut = 0;
		struct flow *f = conn->flows;
		while (f != NULL) {
			struct flow *next = f->next;
			const char *detail = NULL;
			const char *why = flow_revoked(cfg, f, &detail);
			if (why != NULL && f->end_reason == NULL) {
				f->end_reason = why;
				dp->flows_cut++;
				SP_LOG(SP_LOG_INFO, "flow cut by a new config",
				       SP_LOG_STR("flow", f->flow_id), SP_LOG_STR("reason", why),
				       SP_LOG_STR("detail", detail),
				       SP_LOG_STR("user", f->decision.user_id),
				       SP_LOG_STR("resource", f->decision.resource_id),
				       SP_LOG_STR("session", f->decision.session_id));
				sp_tunnel_reset(conn->tunnel, f->stream, SP_TUNNEL_CANCEL);
				cut = 1;
			}
			f = next;
		}
		if (cut)
			conn_flush(conn);
		conn = next_conn;
	}
}

/* ---- drain ---- */

static void on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dataplane *dp = arg;
	SP_LOG(SP_LOG_INFO, "drain grace period over; closing the remaining tunnels",
	       SP_LOG_UINT("tunnels", dp->conn_count));
	event_base_loopexit(dp->base, NULL);
}

/*
 * accept() failed on a listener. Out of descriptors (EMFILE/ENFILE) or kernel memory
 * the pending connection stays queued and the listener stays readable, so retrying at
 * once would spin the loop: shed the oldest queued connection (close the spare
 * descriptor, accept, close), pause both listeners for ACCEPT_PAUSE_MS, and say so at
 * most every FD_WARN_INTERVAL_S. Other errors are logged and accepting continues.
 */
static void on_accept_error(struct evconnlistener *listener, void *arg)
{
	struct dataplane *dp = arg;
	int err = EVUTIL_SOCKET_ERROR();
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
		SP_LOG(SP_LOG_WARN, "cannot accept a connection", SP_LOG_STR("error", strerror(err)));
		return;
	}
	fd_shortage(dp, err);
	if (dp->spare_fd != -1) {
		close(dp->spare_fd);
		int fd = accept(evconnlistener_get_fd(listener), NULL, NULL);
		if (fd != -1)
			close(fd);
		dp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	if (dp->accept_timer == NULL || dp->draining)
		return;
	evconnlistener_disable(listener);
	struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
	evtimer_add(dp->accept_timer, &tv);
}

static void on_accept_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dataplane *dp = arg;
	if (dp->listener != NULL && !dp->draining)
		evconnlistener_enable(dp->listener);
}

static void on_metrics_resume(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	evconnlistener_enable(arg);
}

/* The same pause for the metrics listener (whose callback argument is evhttp's). */
static void on_metrics_accept_error(struct evconnlistener *listener, void *arg)
{
	(void)arg;
	int err = EVUTIL_SOCKET_ERROR();
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
		return;
	struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
	if (event_base_once(evconnlistener_get_base(listener), -1, EV_TIMEOUT, on_metrics_resume,
			    listener, &tv) == 0)
		evconnlistener_disable(listener);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	struct dataplane *dp = arg;
	if (dp->draining) {
		event_base_loopexit(dp->base, NULL);
		return;
	}
	dp->draining = 1;
	SP_LOG(SP_LOG_INFO, "draining: no new tunnels or flows", SP_LOG_INT("signal", sig),
	       SP_LOG_UINT("tunnels", dp->conn_count));
	if (dp->listener != NULL)
		evconnlistener_disable(dp->listener);
	connector_relays_stop(dp->relays);
	struct tunnel_conn *conn = dp->conns;
	while (conn != NULL) {
		struct tunnel_conn *next = conn->next;
		sp_tunnel_shutdown(conn->tunnel);
		conn_flush(conn);
		conn = next;
	}
	if (dp->conns == NULL) {
		event_base_loopexit(dp->base, NULL);
		return;
	}
	struct timeval tv = {.tv_sec = dp->opts.drain_grace_ms / 1000,
			     .tv_usec = (dp->opts.drain_grace_ms % 1000) * 1000};
	event_add(dp->drain_timer, &tv);
}

/* ---- /metrics and /healthz ---- */

static void on_healthz(struct evhttp_request *req, void *arg)
{
	struct dataplane *dp = arg;
	struct evbuffer *out = evbuffer_new();
	if (out == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	int ready = connector_shared_ready(dp->shared, (int64_t)time(NULL)) && !dp->draining;
	evbuffer_add_printf(out, "%s\n", ready ? "ok" : "not ready");
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
	evhttp_send_reply(req, ready ? 200 : 503, ready ? "OK" : "Service Unavailable", out);
	evbuffer_free(out);
}

static void metric(struct evbuffer *out, const char *name, const char *type, const char *help,
		   long long value)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %lld\n", name, help, name, type,
			    name, value);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	struct dataplane *dp = arg;
	struct connector_shared *s = dp->shared;
	struct evbuffer *out = evbuffer_new();
	if (out == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	int64_t now = (int64_t)time(NULL);
	metric(out, "sallyport_connector_ready", "gauge", "1 when connected and holding a config",
	       connector_shared_ready(s, now));
	metric(out, "sallyport_connector_tunnels", "gauge", "open tunnels", (long long)dp->conn_count);
	metric(out, "sallyport_connector_tunnels_total", "counter", "tunnels accepted",
	       (long long)dp->tunnels_total);
	metric(out, "sallyport_connector_handshake_failures_total", "counter",
	       "tunnels that failed their TLS handshake", (long long)dp->handshake_failures);
	metric(out, "sallyport_connector_flows_allowed_total", "counter", "flows opened",
	       (long long)dp->flows_allowed);
	metric(out, "sallyport_connector_flows_denied_total", "counter", "flows refused",
	       (long long)dp->flows_denied);
	evbuffer_add_printf(out, "# HELP sallyport_connector_flows_denied_by_reason_total flows "
				 "refused, by reason\n# TYPE "
				 "sallyport_connector_flows_denied_by_reason_total counter\n");
	for (int r = 1; r <= SP_TUNNEL_REASON_UNKNOWN; r++)
		if (dp->denied_by_reason[r] > 0)
			evbuffer_add_printf(out,
					    "sallyport_connector_flows_denied_by_reason_total{reason=\"%s\"} "
					    "%llu\n",
					    sp_tunnel_reason_name((enum sp_tunnel_reason)r),
					    (unsigned long long)dp->denied_by_reason[r]);
	metric(out, "sallyport_connector_fd_exhausted_total", "counter",
	       "tunnel accepts and service dials that failed for want of file descriptors",
	       (long long)dp->fd_exhausted);
	metric(out, "sallyport_connector_flows_cut_total", "counter",
	       "live flows reset by a revocation", (long long)dp->flows_cut);
	metric(out, "sallyport_connector_bytes_up_total", "counter", "bytes client to service",
	       (long long)dp->bytes_up);
	metric(out, "sallyport_connector_bytes_down_total", "counter", "bytes service to client",
	       (long long)dp->bytes_down);
	const struct connector_relay_counters *rc = connector_relays_counters(dp->relays);
	metric(out, "sallyport_connector_relays_registered", "gauge",
	       "relay control connections registered now", (long long)rc->registered);
	metric(out, "sallyport_connector_relay_registrations_total", "counter",
	       "registrations a relay accepted", (long long)rc->registrations);
	metric(out, "sallyport_connector_relay_refusals_total", "counter",
	       "registrations a relay refused", (long long)rc->refusals);
	metric(out, "sallyport_connector_relay_dials_total", "counter",
	       "relay dials answered with a data connection", (long long)rc->dials);
	metric(out, "sallyport_connector_relay_dials_failed_total", "counter",
	       "relay dials that could not be answered", (long long)rc->dials_failed);
	metric(out, "sallyport_connector_config_seq", "gauge", "seq of the config in use",
	       atomic_load(&s->config_seq));
	metric(out, "sallyport_connector_config_fetches_total", "counter", "configs received",
	       atomic_load(&s->config_fetches));
	metric(out, "sallyport_connector_controller_errors_total", "counter",
	       "failed exchanges with the controller", atomic_load(&s->controller_errors));
	metric(out, "sallyport_connector_clock_skew_seconds", "gauge",
	       "controller clock minus ours at the last heartbeat", atomic_load(&s->clock_skew_s));
	metric(out, "sallyport_connector_flow_events_sent_total", "counter",
	       "flow events accepted by the controller", atomic_load(&s->flow_events_sent));
	metric(out, "sallyport_connector_flow_events_queued", "gauge", "flow events waiting",
	       (long long)connector_flow_queue_length(&s->flows));
	metric(out, "sallyport_connector_flow_events_dropped_total", "counter",
	       "flow events dropped because the queue was full",
	       (long long)connector_flow_queue_dropped(&s->flows));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

/* ---- setup ---- */

static int resolve_listen(const char *text, struct sockaddr_storage *ss, socklen_t *len,
			  struct sp_diag *diag, const char *what)
{
	char host[SP_CONFIG_HOST_MAX];
	uint16_t port = 0;
	struct sp_diag d = {{0}};
	if (sp_config_parse_address(text, host, sizeof(host), &port, &d) < 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: %s", what, d.message);
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		*len = sizeof(*sin6);
	} else {
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: \"%s\" must be an IP address and port",
				   what, text);
	}
	return 0;
}

int dataplane_new(struct connector_shared *shared, const struct dataplane_options *opts,
		  struct dataplane **out, struct sp_diag *diag)
{
	*out = NULL;
	int r = SP_ERR_NOMEM;
	struct dataplane *dp = calloc(1, sizeof(*dp));
	if (dp == NULL)
		return r;
	dp->spare_fd = -1;
	dp->shared = shared;
	dp->opts = *opts;
	if (dp->opts.connect_timeout_ms <= 0)
		dp->opts.connect_timeout_ms = 10000;
	if (dp->opts.drain_grace_ms <= 0)
		dp->opts.drain_grace_ms = 30000;
	if (dp->opts.udp_idle_timeout_ms <= 0)
		dp->opts.udp_idle_timeout_ms = 60000;
	evthread_use_pthreads();
#ifdef M_TRIM_THRESHOLD
	/*
	 * A busy flow allocates and frees up to a few hundred KiB of buffer per tunnel read
	 * (evbuffer chains). With glibc's default trim threshold the heap top was given back
	 * and taken again on nearly every read: ~1,400 brk calls a second per Gbit/s. Keep up
	 * to 16 MiB of free heap instead (it is reused, not leaked).
	 */
	mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
	mallopt(M_TOP_PAD, 1024 * 1024);
#endif
	dp->base = event_base_new();
	if (dp->base == NULL)
		goto fail;

	const char *alpn[] = {SP_TLS_ALPN_SALLYPORT_1};
	struct sp_tls_options tls = {.alpn = alpn, .alpn_count = 1, .now = (int64_t)time(NULL),
				     .common_name = "sallyport-connector"};
	r = sp_tls_server_ctx_new(shared->identity->key, &tls, &dp->tls_ctx, diag);
	if (r < 0)
		goto fail;

	r = SP_ERR_NOMEM;
	struct ares_options ao;
	memset(&ao, 0, sizeof(ao));
	ao.sock_state_cb = dns_sock_state;
	ao.sock_state_cb_data = dp;
	ao.timeout = 2000;
	ao.tries = 2;
	if (ares_init_options(&dp->ares, &ao,
			      ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) !=
	    ARES_SUCCESS) {
		r = sp_diag_set(diag, SP_ERR_IO, "cannot start the DNS resolver");
		goto fail;
	}
	dp->ares_ready = 1;
	if (opts->dns_servers != NULL && opts->dns_servers[0] != '\0' &&
	    ares_set_servers_ports_csv(dp->ares, opts->dns_servers) != ARES_SUCCESS) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
				"SALLYPORT_DNS: \"%s\" is not a list of IP[:port] resolvers",
				opts->dns_servers);
		goto fail;
	}

	dp->config_ev = event_new(dp->base, -1, 0, on_config, dp);
	dp->sigterm_ev = evsignal_new(dp->base, SIGTERM, on_signal, dp);
	dp->sigint_ev = evsignal_new(dp->base, SIGINT, on_signal, dp);
	dp->drain_timer = evtimer_new(dp->base, on_drain_timer, dp);
	dp->dns_timer = evtimer_new(dp->base, on_dns_timer, dp);
	dp->accept_timer = evtimer_new(dp->base, on_accept_timer, dp);
	if (dp->config_ev == NULL || dp->sigterm_ev == NULL || dp->sigint_ev == NULL ||
	    dp->drain_timer == NULL || dp->dns_timer == NULL || dp->accept_timer == NULL)
		goto fail;
	event_add(dp->sigterm_ev, NULL);
	event_add(dp->sigint_ev, NULL);
	shared->config_event = dp->config_ev;
	dp->relay_ev = event_new(dp->base, -1, 0, on_relay_update, dp);
	if (dp->relay_ev == NULL ||
	    connector_relays_new(dp->base, shared, tunnel_adopt, dp, &dp->relays) < 0)
		goto fail;
	shared->relay_event = dp->relay_ev;

	if (opts->direct_listen != NULL && opts->direct_listen[0] != '\0') {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		r = resolve_listen(opts->direct_listen, &ss, &len, diag, "SALLYPORT_DIRECT_LISTEN");
		if (r < 0)
			goto fail;
		dp->listener = evconnlistener_new_bind(
		    dp->base, on_accept, dp,
		    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 512,
		    (struct sockaddr *)&ss, (int)len);
		if (dp->listener == NULL) {
			r = sp_diag_set(diag, SP_ERR_IO, "SALLYPORT_DIRECT_LISTEN %s: cannot listen: %s",
					opts->direct_listen, strerror(errno));
			goto fail;
		}
		evconnlistener_set_error_cb(dp->listener, on_accept_error);
		dp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (dp->spare_fd == -1) {
			r = sp_diag_set(diag, SP_ERR_IO, "cannot open /dev/null: %s", strerror(errno));
			goto fail;
		}
	}
	if (opts->metrics_listen != NULL && opts->metrics_listen[0] != '\0') {
		char host[SP_CONFIG_HOST_MAX];
		uint16_t port = 0;
		struct sp_diag d = {{0}};
		if (sp_config_parse_address(opts->metrics_listen, host, sizeof(host), &port, &d) < 0) {
			r = sp_diag_set(diag, SP_ERR_INVALID, "SALLYPORT_METRICS_ADDR: %s", d.message);
			goto fail;
		}
		dp->http = evhttp_new(dp->base);
		if (dp->http == NULL)
			goto fail;
		evhttp_set_allowed_methods(dp->http, EVHTTP_REQ_GET);
		evhttp_set_cb(dp->http, "/healthz", on_healthz, dp);
		evhttp_set_cb(dp->http, "/metrics", on_metrics, dp);
		struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(dp->http, host, port);
		if (bound == NULL) {
			r = sp_diag_set(diag, SP_ERR_IO, "SALLYPORT_METRICS_ADDR %s: cannot listen: %s",
					opts->metrics_listen, strerror(errno));
			goto fail;
		}
		evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(bound),
					    on_metrics_accept_error);
	}
	*out = dp;
	return 0;
fail:
	dataplane_free(dp);
	return r;
}

int dataplane_run(struct dataplane *dp)
{
	/* a config may have arrived before the loop started */
	event_active(dp->config_ev, EV_READ, 0);
	event_active(dp->relay_ev, EV_READ, 0);
	return event_base_dispatch(dp->base) < 0 ? SP_ERR_IO : 0;
}

void dataplane_free(struct dataplane *dp)
{
	if (dp == NULL)
		return;
	while (dp->conns != NULL) {
		dp->draining = 0; /* no loopexit from conn_close now */
		conn_close(dp->conns, "shutdown");
	}
	if (dp->listener != NULL)
		evconnlistener_free(dp->listener);
	connector_relays_free(dp->relays);
	if (dp->shared != NULL && dp->shared->relay_event == dp->relay_ev)
		dp->shared->relay_event = NULL;
	if (dp->relay_ev != NULL)
		event_free(dp->relay_ev);
	if (dp->http != NULL)
		evhttp_free(dp->http);
	if (dp->ares_ready) {
		/* pending queries are cancelled: their callbacks free orphaned flows */
		ares_destroy(dp->ares);
	}
	for (size_t i = 0; i < MAX_DNS_SOCKETS; i++)
		if (dp->dns[i].ev != NULL)
			event_free(dp->dns[i].ev);
	if (dp->shared != NULL && dp->shared->config_event == dp->config_ev)
		dp->shared->config_event = NULL;
	struct event *evs[] = {dp->config_ev, dp->sigterm_ev, dp->sigint_ev, dp->drain_timer,
			       dp->dns_timer, dp->accept_timer};
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (dp->spare_fd != -1)
		close(dp->spare_fd);
	connector_grant_cache_clear(&dp->grants);
	connector_config_free(dp->config);
	SSL_CTX_free(dp->tls_ctx);
	if (dp->base != NULL)
		event_base_free(dp->base);
	free(dp);
}
