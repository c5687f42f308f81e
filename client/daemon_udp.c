/*
 * client/daemon_udp.c — tun mode's UDP flows.
 *
 * The nft table (client/tun_rules.h) tproxies every UDP datagram a program sends to a
 * synthetic address to a transparent UDP socket here (127.0.0.1, ::1), which reads the
 * datagram's original destination with IP(V6)_RECVORIGDSTADDR. Each (source addr:port,
 * original destination addr:port) pair is one flow (struct flow, kind FLOW_UDP): a
 * socket with IP(V6)_TRANSPARENT bound to the original destination and connected to the
 * program's address answers it (so the program sees the answer come from the address it
 * asked) and, being connected, also receives the pair's later datagrams (TPROXY finds a
 * connected socket first). The flow's destination name comes from the synthetic table,
 * its grant and stream exactly as for TCP (flow_start, flow_dispatch in
 * client/daemon_flows.c), with a `udp` stream whose bytes are length-prefixed datagrams
 * (shared/wire.h).
 *
 * Limits: UDP_FLOWS_MAX flows at once (a new pair beyond it is refused, "overloaded");
 * datagrams waiting for the stream to open or for the tunnel are bounded (UDP_QUEUE_MAX
 * bytes, more are dropped: UDP semantics); a flow with no datagram either way for
 * udp_idle_ms (SALLYPORT_UDP_IDLE_TIMEOUT, default 30 s) ends.
 *
 * Proxy mode: a SOCKS5 UDP ASSOCIATE (RFC 1928 §7) opens a relay socket next to the
 * proxy's address for as long as its TCP connection lasts; each datagram names its
 * destination in a header (client/proxy_parse.h), and each (program address, header)
 * pair is one datagram flow, started like a SOCKS5 CONNECT (any protected name, pattern
 * or address, UDP ports). Answers go back with the same header from the relay socket;
 * only the connection's own host may use the relay.
 *
 * Ownership: struct udp_flow hangs off its struct flow and is freed by udp_flow_release
 * (from flow_close); the listening sockets hang off struct daemon (event-loop thread only).
 */
#include "client/daemon_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shared/config.h"
#include "shared/log.h"
#include "shared/wire.h"

#define UDP_FLOWS_MAX 512
/* Framed datagrams a flow keeps for its stream (before it opens, or the tunnel is slow). */
#define UDP_QUEUE_MAX (256 * 1024)
#define UDP_IDLE_DEFAULT_MS 30000
/* Datagrams read per wake-up of a socket (fairness between sockets). */
#define UDP_READ_ROUNDS 32

struct udp_flow {
	/*
	 * tun mode: transparent, bound to the original destination, connected to the source.
	 * SOCKS5: -1 for a datagram flow; the relay socket for the association itself.
	 */
	int fd;
	struct event *ev_read, *ev_idle;
	struct sockaddr_storage src, dst; /* association: src is the program's address */
	int relay;	    /* this is a SOCKS5 association (on its FLOW_SOCKS connection) */
	struct flow *assoc; /* SOCKS5 datagram flow: its association's connection */
	uint8_t header[4 + 1 + PROXY_HOST_MAX + 2]; /* SOCKS5: the header answers carry */
	size_t header_len;
	uint8_t *out; /* framed datagrams not yet taken by the stream */
	size_t out_len, out_cap;
	uint8_t *rx; /* the start of a frame from the connector that is not whole yet */
	size_t rx_len;
	uint64_t drops;
};

static int sockaddr_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a;
		const struct sockaddr_in *y = (const struct sockaddr_in *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
	const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
	return x->sin6_port == y->sin6_port &&
	       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

static socklen_t sockaddr_len(const struct sockaddr_storage *a)
{
	return a->ss_family == AF_INET ? (socklen_t)sizeof(struct sockaddr_in)
				       : (socklen_t)sizeof(struct sockaddr_in6);
}

static void udp_touch(struct flow *f)
{
	struct timeval tv = {.tv_sec = (time_t)(f->d->udp_idle_ms / 1000),
			     .tv_usec = (suseconds_t)((f->d->udp_idle_ms % 1000) * 1000)};
	event_add(f->udp->ev_idle, &tv);
}

static void udp_kick(struct flow *f)
{
	if (f->tn != NULL && !f->tn->dead)
		event_active(f->tn->ev_kick, EV_TIMEOUT, 0);
}

/* Hands queued frames to the stream; what it does not take stays queued, in order. */
static void udp_flush(struct flow *f)
{
	struct udp_flow *u = f->udp;
	if (f->state != F_OPEN || f->tn == NULL || f->stream_closed || u->out_len == 0)
		return;
	size_t accepted = 0;
	if (sp_tunnel_write(f->tn->t, f->stream, u->out, u->out_len, &accepted) < 0) {
		flow_close(f, 1);
		return;
	}
	memmove(u->out, u->out + accepted, u->out_len - accepted);
	u->out_len -= accepted;
	udp_kick(f);
}

/* A datagram from the program: framed and queued for the stream (dropped when full). */
static void udp_up(struct flow *f, const uint8_t *payload, size_t len)
{
	struct udp_flow *u = f->udp;
	size_t queued = u->out_len;
	if (f->tn != NULL && !f->stream_closed && f->stream > 0)
		queued += sp_tunnel_queued(f->tn->t, f->stream);
	if (len > SP_UDP_DATAGRAM_MAX || queued + len + 2 > UDP_QUEUE_MAX) {
		u->drops++;
		return;
	}
	if (u->out_len + len + 2 > u->out_cap) {
		/* grows by doubling from 4 KiB: most flows queue one small datagram at a time */
		size_t cap = u->out_cap == 0 ? 4096 : u->out_cap;
		while (cap < u->out_len + len + 2)
			cap *= 2;
		if (cap > UDP_QUEUE_MAX)
			cap = UDP_QUEUE_MAX;
		uint8_t *grown = realloc(u->out, cap);
		if (grown == NULL) {
			u->drops++;
			return;
		}
		u->out = grown;
		u->out_cap = cap;
	}
	u->out[u->out_len] = (uint8_t)(len >> 8);
	u->out[u->out_len + 1] = (uint8_t)(len & 0xff);
	memcpy(u->out + u->out_len + 2, payload, len);
	u->out_len += len + 2;
	f->up += len;
	udp_touch(f);
	udp_flush(f);
}

void udp_flow_opened(struct flow *f)
{
	if (f->udp != NULL)
		udp_flush(f);
}

void udp_flow_writable(struct flow *f)
{
	if (f->udp != NULL)
		udp_flush(f);
}

/* An answer to the program, from the address it asked (drops on a full socket: UDP). */
static void udp_down(struct flow *f, const uint8_t *frame, size_t len)
{
	const uint8_t *payload = NULL;
	size_t plen = 0;
	if (sp_udp_frame_decode(frame, len, &payload, &plen) != (int)len)
		return;
	struct udp_flow *u = f->udp;
	if (u->assoc != NULL) {
		struct udp_flow *a = u->assoc->udp;
		struct iovec iov[2] = {{.iov_base = u->header, .iov_len = u->header_len},
				       {.iov_base = (void *)(uintptr_t)payload, .iov_len = plen}};
		struct msghdr m = {.msg_name = &u->src,
				   .msg_namelen = sockaddr_len(&u->src),
				   .msg_iov = iov,
				   .msg_iovlen = 2};
		if (a == NULL || sendmsg(a->fd, &m, MSG_DONTWAIT) == -1)
			u->drops++;
	} else if (send(u->fd, payload, plen, MSG_DONTWAIT) == -1) {
		u->drops++;
	}
	f->down += plen;
	udp_touch(f);
}

void udp_flow_data(struct flow *f, const uint8_t *data, size_t len)
{
	struct udp_flow *u = f->udp;
	if (u == NULL)
		return;
	while (len > 0) {
		if (u->rx_len == 0) {
			/* whole frames straight from the stream's bytes */
			const uint8_t *payload = NULL;
			size_t plen = 0;
			int n = sp_udp_frame_decode(data, len, &payload, &plen);
			if (n > 0) {
				udp_down(f, data, (size_t)n);
				if (f->dead)
					return;
				data += n;
				len -= (size_t)n;
				continue;
			}
			if (n != SP_ERR_AGAIN) {
				flow_close(f, 1); /* a length over the limit: not our framing */
				return;
			}
		}
		if (u->rx == NULL && (u->rx = malloc(2 + SP_UDP_DATAGRAM_MAX)) == NULL) {
			flow_close(f, 1);
			return;
		}
		size_t need = 2;
		if (u->rx_len >= 2)
			need = 2 + (((size_t)u->rx[0] << 8) | u->rx[1]);
		if (need > 2 + SP_UDP_DATAGRAM_MAX) {
			flow_close(f, 1);
			return;
		}
		size_t take = need - u->rx_len < len ? need - u->rx_len : len;
		memcpy(u->rx + u->rx_len, data, take);
		u->rx_len += take;
		data += take;
		len -= take;
		if (u->rx_len >= 2 && u->rx_len == 2 + (((size_t)u->rx[0] << 8) | u->rx[1])) {
			size_t whole = u->rx_len;
			u->rx_len = 0;
			udp_down(f, u->rx, whole);
			if (f->dead)
				return;
		}
	}
}

void udp_flow_release(struct flow *f)
{
	struct udp_flow *u = f->udp;
	if (u == NULL)
		return;
	f->udp = NULL;
	if (u->relay) /* the association ends: so do its datagram flows */
		for (struct flow *g = f->d->flows, *next; g != NULL; g = next) {
			next = g->next;
			if (g->kind == FLOW_UDP && g->udp != NULL && g->udp->assoc == f)
				flow_close(g, 0);
		}
	if (u->ev_read != NULL)
		event_free(u->ev_read);
	if (u->ev_idle != NULL)
		event_free(u->ev_idle);
	if (u->fd != -1)
		close(u->fd);
	if (u->drops > 0)
		SP_LOG(SP_LOG_DEBUG, "udp flow ended with drops", SP_LOG_STR("target", f->host),
		       SP_LOG_UINT("drops", u->drops));
	free(u->out);
	free(u->rx);
	if (!u->relay)
		f->d->udp_active--;
	free(u);
}

/* Later datagrams of the pair, on the flow's connected socket. */
static void udp_on_flow_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct flow *f = arg;
	uint8_t buf[SP_UDP_DATAGRAM_MAX];
	for (int round = 0; round < UDP_READ_ROUNDS && !f->dead; round++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == -1)
			return; /* EAGAIN, or an ICMP error on the connected socket */
		udp_up(f, buf, (size_t)n);
	}
}

static void udp_on_idle(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct flow *f = arg;
	SP_LOG(SP_LOG_DEBUG, "udp flow idle", SP_LOG_STR("target", f->host),
	       SP_LOG_UINT("port", f->port));
	flow_close(f, 0);
}

/* A refusal before any flow exists (the cap): recorded like a refused flow. */
static void udp_refuse_pair(struct daemon *d, const struct sockaddr_storage *dst,
			    const char *reason)
{
	struct flow tmp;
	memset(&tmp, 0, sizeof(tmp));
	const void *addr = dst->ss_family == AF_INET
			       ? (const void *)&((const struct sockaddr_in *)dst)->sin_addr
			       : (const void *)&((const struct sockaddr_in6 *)dst)->sin6_addr;
	inet_ntop(dst->ss_family, addr, tmp.host, sizeof(tmp.host));
	tmp.port = ntohs(dst->ss_family == AF_INET
			     ? ((const struct sockaddr_in *)dst)->sin_port
			     : ((const struct sockaddr_in6 *)dst)->sin6_port);
	record_denial(d, &tmp, reason, "client");
}

/* The transparent socket that answers the pair and receives its later datagrams. */
static int udp_pair_socket(const struct sockaddr_storage *src, const struct sockaddr_storage *dst)
{
	int family = dst->ss_family;
	int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	int one = 1;
	int rc = family == AF_INET ? setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))
				   : setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one));
	if (rc == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    (family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1) ||
	    bind(fd, (const struct sockaddr *)dst, sockaddr_len(dst)) == -1 ||
	    connect(fd, (const struct sockaddr *)src, sockaddr_len(src)) == -1) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/*
 * A datagram flow around u (owned from here on, freed on failure), in the daemon's list;
 * NULL when it could not be made.
 */
static struct flow *udp_flow_add(struct daemon *d, struct udp_flow *u)
{
	struct flow *f = calloc(1, sizeof(*f));
	if (f == NULL) {
		if (u->fd != -1)
			close(u->fd);
		free(u);
		return NULL;
	}
	f->d = d;
	f->kind = FLOW_UDP;
	f->state = F_OPENING;
	f->udp = u;
	if (u->fd != -1)
		u->ev_read =
		    event_new(d->base, u->fd, EV_READ | EV_PERSIST, udp_on_flow_readable, f);
	u->ev_idle = evtimer_new(d->base, udp_on_idle, f);
	f->next = d->flows;
	if (d->flows != NULL)
		d->flows->prev = f;
	d->flows = f;
	d->flows_active++;
	d->udp_active++;
	if ((u->fd != -1 && u->ev_read == NULL) || u->ev_idle == NULL) {
		flow_close(f, 1);
		return NULL;
	}
	if (u->ev_read != NULL)
		event_add(u->ev_read, NULL);
	return f;
}

/* A datagram of a pair with no flow yet: the flow is made, then started like TCP's. */
static void udp_new_flow(struct daemon *d, const struct sockaddr_storage *src,
			 const struct sockaddr_storage *dst, const uint8_t *payload, size_t len)
{
	if (d->udp_active >= UDP_FLOWS_MAX || d->flows_active >= MAX_FLOWS) {
		udp_refuse_pair(d, dst, "overloaded");
		return;
	}
	struct udp_flow *u = calloc(1, sizeof(*u));
	if (u == NULL)
		return;
	u->fd = udp_pair_socket(src, dst);
	if (u->fd == -1) {
		SP_LOG(SP_LOG_WARN, "udp flow: no transparent socket", SP_LOG_STR("error",
										  strerror(errno)));
		free(u);
		return;
	}
	u->src = *src;
	u->dst = *dst;
	struct flow *f = udp_flow_add(d, u);
	if (f == NULL)
		return;
	int family = dst->ss_family;
	const uint8_t *addr =
	    family == AF_INET ? (const uint8_t *)&((const struct sockaddr_in *)dst)->sin_addr
			      : (const uint8_t *)&((const struct sockaddr_in6 *)dst)->sin6_addr;
	f->port = ntohs(family == AF_INET ? ((const struct sockaddr_in *)dst)->sin_port
					  : ((const struct sockaddr_in6 *)dst)->sin6_port);
	udp_up(f, payload, len);
	if (tun_addr_target(d, family, addr, f->host, sizeof(f->host)) < 0) {
		flow_refuse(f, "not_protected", "client", "no protected name at this address");
		return;
	}
	flow_start(f);
}

/* Datagrams tproxied to the listening socket: each to its pair's flow. */
static void udp_on_listener(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct daemon *d = arg;
	uint8_t buf[SP_UDP_DATAGRAM_MAX];
	for (int round = 0; round < UDP_READ_ROUNDS; round++) {
		struct sockaddr_storage src, dst;
		memset(&src, 0, sizeof(src));
		memset(&dst, 0, sizeof(dst));
		union {
			struct cmsghdr align;
			uint8_t bytes[CMSG_SPACE(sizeof(struct sockaddr_in6)) + 64];
		} control;
		struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
		struct msghdr msg = {.msg_name = &src,
				     .msg_namelen = sizeof(src),
				     .msg_iov = &iov,
				     .msg_iovlen = 1,
				     .msg_control = control.bytes,
				     .msg_controllen = sizeof(control.bytes)};
		ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
		if (n == -1)
			return;
		int have_dst = 0;
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level == SOL_IP && c->cmsg_type == IP_ORIGDSTADDR &&
			    c->cmsg_len >= CMSG_LEN(sizeof(struct sockaddr_in))) {
				memcpy(&dst, CMSG_DATA(c), sizeof(struct sockaddr_in));
				have_dst = dst.ss_family == AF_INET;
			} else if (c->cmsg_level == SOL_IPV6 && c->cmsg_type == IPV6_ORIGDSTADDR &&
				   c->cmsg_len >= CMSG_LEN(sizeof(struct sockaddr_in6))) {
				memcpy(&dst, CMSG_DATA(c), sizeof(struct sockaddr_in6));
				have_dst = dst.ss_family == AF_INET6;
			}
		}
		if (!have_dst || (msg.msg_flags & MSG_TRUNC) || src.ss_family != dst.ss_family)
			continue;
		struct flow *f = d->flows;
		while (f != NULL && !(f->kind == FLOW_UDP && f->udp != NULL &&
				      sockaddr_equal(&f->udp->src, &src) &&
				      sockaddr_equal(&f->udp->dst, &dst)))
			f = f->next;
		if (f != NULL)
			udp_up(f, buf, (size_t)n);
		else
			udp_new_flow(d, &src, &dst, buf, (size_t)n);
	}
}

/* The idle timeout, once: SALLYPORT_UDP_IDLE_TIMEOUT or UDP_IDLE_DEFAULT_MS. */
static int udp_idle_setup(struct daemon *d, struct sp_diag *diag)
{
	if (d->udp_idle_ms > 0)
		return 0;
	const char *idle = getenv("SALLYPORT_UDP_IDLE_TIMEOUT");
	int64_t ms = UDP_IDLE_DEFAULT_MS;
	if (idle != NULL && idle[0] != '\0' &&
	    (sp_config_parse_duration(idle, &ms, diag) < 0 || ms <= 0 || ms > 3600 * 1000))
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "SALLYPORT_UDP_IDLE_TIMEOUT \"%s\": want a duration of 1 ms to 1 h",
				   idle);
	d->udp_idle_ms = ms;
	return 0;
}

static int same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		       ((const struct sockaddr_in *)b)->sin_addr.s_addr;
	return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* SOCKS5: datagrams on an association's relay socket, each to its flow. */
static void udp_on_relay(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct flow *af = arg;
	struct daemon *d = af->d;
	uint8_t buf[SP_UDP_DATAGRAM_MAX];
	for (int round = 0; round < UDP_READ_ROUNDS && af->udp != NULL; round++) {
		struct sockaddr_storage src;
		memset(&src, 0, sizeof(src));
		socklen_t sl = sizeof(src);
		ssize_t n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&src, &sl);
		if (n == -1)
			return;
		struct proxy_target t;
		size_t hl = 0;
		/* only the association's own host; fragments and bad headers are dropped */
		if (!same_ip(&src, &af->udp->src) ||
		    socks5_parse_udp_header(buf, (size_t)n, &hl, &t) < 0 ||
		    hl > sizeof(af->udp->header))
			continue;
		struct flow *f = d->flows;
		while (f != NULL &&
		       !(f->kind == FLOW_UDP && f->udp != NULL && f->udp->assoc == af &&
			 sockaddr_equal(&f->udp->src, &src) && f->udp->header_len == hl &&
			 memcmp(f->udp->header, buf, hl) == 0))
			f = f->next;
		if (f != NULL) {
			udp_up(f, buf + hl, (size_t)n - hl);
			continue;
		}
		if (d->udp_active >= UDP_FLOWS_MAX || d->flows_active >= MAX_FLOWS) {
			struct flow tmp;
			memset(&tmp, 0, sizeof(tmp));
			snprintf(tmp.host, sizeof(tmp.host), "%s", t.host);
			tmp.port = t.port;
			record_denial(d, &tmp, "overloaded", "client");
			continue;
		}
		struct udp_flow *u = calloc(1, sizeof(*u));
		if (u == NULL)
			continue;
		u->fd = -1;
		u->assoc = af;
		u->src = src;
		memcpy(u->header, buf, hl);
		u->header_len = hl;
		f = udp_flow_add(d, u);
		if (f == NULL)
			continue;
		snprintf(f->host, sizeof(f->host), "%s", t.host);
		f->port = t.port;
		udp_up(f, buf + hl, (size_t)n - hl);
		flow_start(f);
	}
}

void udp_socks_associate(struct flow *f)
{
	struct daemon *d = f->d;
	evutil_socket_t cfd = bufferevent_getfd(f->bev);
	struct sockaddr_storage local, peer;
	socklen_t ll = sizeof(local), pl = sizeof(peer);
	memset(&local, 0, sizeof(local));
	memset(&peer, 0, sizeof(peer));
	snprintf(f->host, sizeof(f->host), "udp-associate");
	f->port = 0;
	struct sp_diag diag = {{0}};
	struct udp_flow *u = calloc(1, sizeof(*u));
	if (u != NULL)
		u->fd = -1;
	if (u == NULL || udp_idle_setup(d, &diag) < 0 || getsockname(cfd, (struct sockaddr *)&local, &ll) == -1 ||
	    getpeername(cfd, (struct sockaddr *)&peer, &pl) == -1 ||
	    (local.ss_family != AF_INET && local.ss_family != AF_INET6))
		goto fail;
	if (local.ss_family == AF_INET)
		((struct sockaddr_in *)&local)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&local)->sin6_port = 0;
	u->fd = socket(local.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ll = sockaddr_len(&local);
	if (u->fd == -1 || bind(u->fd, (struct sockaddr *)&local, ll) == -1 ||
	    getsockname(u->fd, (struct sockaddr *)&local, &ll) == -1)
		goto fail;
	u->relay = 1;
	u->src = peer;
	u->ev_read = event_new(d->base, u->fd, EV_READ | EV_PERSIST, udp_on_relay, f);
	if (u->ev_read == NULL)
		goto fail;
	event_add(u->ev_read, NULL);
	f->udp = u;
	f->state = F_OPEN;
	uint8_t r[22] = {5, SOCKS5_REPLY_OK, 0};
	size_t rl;
	if (local.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&local;
		r[3] = 1;
		memcpy(r + 4, &a->sin_addr, 4);
		memcpy(r + 8, &a->sin_port, 2);
		rl = 10;
	} else {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&local;
		r[3] = 4;
		memcpy(r + 4, &a->sin6_addr, 16);
		memcpy(r + 20, &a->sin6_port, 2);
		rl = 22;
	}
	bufferevent_write(f->bev, r, rl);
	/* the connection only says how long the association lasts: a little input is kept */
	bufferevent_setwatermark(f->bev, EV_READ, 0, 4096);
	bufferevent_enable(f->bev, EV_READ);
	return;
fail:
	if (u != NULL) {
		if (u->fd != -1)
			close(u->fd);
		free(u);
	}
	flow_refuse(f, "overloaded", "client", "no UDP relay socket");
}

int udp_start(struct daemon *d, int family, uint16_t *port, struct sp_diag *diag)
{
	*port = 0;
	int k = family == AF_INET ? 0 : 1;
	int rc0 = udp_idle_setup(d, diag);
	if (rc0 < 0)
		return rc0;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
	}
	socklen_t sl = sockaddr_len(&ss);
	int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return sp_diag_set(diag, SP_ERR_IO, "tun UDP socket: %s", strerror(errno));
	int one = 1;
	int rc = family == AF_INET
		     ? setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) == -1 ||
			   setsockopt(fd, SOL_IP, IP_RECVORIGDSTADDR, &one, sizeof(one)) == -1
		     : setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)) == -1 ||
			   setsockopt(fd, SOL_IPV6, IPV6_RECVORIGDSTADDR, &one, sizeof(one)) == -1 ||
			   setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1;
	if (rc || bind(fd, (struct sockaddr *)&ss, sl) == -1 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) == -1) {
		int e = errno;
		close(fd);
		return sp_diag_set(diag, e == EPERM ? SP_ERR_PERMISSION : SP_ERR_IO,
				   "tun UDP socket: %s%s", strerror(e),
				   e == EPERM ? " (tun mode needs root or CAP_NET_ADMIN)" : "");
	}
	d->udp_ev[k] = event_new(d->base, fd, EV_READ | EV_PERSIST, udp_on_listener, d);
	if (d->udp_ev[k] == NULL) {
		close(fd);
		return SP_ERR_NOMEM;
	}
	event_add(d->udp_ev[k], NULL);
	d->udp_fd[k] = fd;
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					: ((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

void udp_stop(struct daemon *d)
{
	for (int k = 0; k < 2; k++) {
		if (d->udp_ev[k] != NULL)
			event_free(d->udp_ev[k]);
		d->udp_ev[k] = NULL;
		if (d->udp_fd[k] != -1)
			close(d->udp_fd[k]);
		d->udp_fd[k] = -1;
	}
}
