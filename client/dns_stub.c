/*
 * client/dns_stub.c — see dns_stub.h for the contract and docs/client-dns.md for the
 * design. The pure decision (dns_stub_decide) comes first; the rest moves bytes between
 * sockets, c-ares and that decision on one libevent loop.
 */
#include "client/dns_stub.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ares.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/rand.h>

#include "shared/log.h"

/* ---- the decision ---- */

static int reply_error(struct sp_buf *out, const struct sp_dns_query *q, uint16_t rcode)
{
	return sp_dns_build_error(out, q, rcode);
}

/* The reply for a protected name: synthetic A/AAAA, or NODATA for anything else. */
static int build_protected(struct sp_buf *out, const struct sp_dns_query *q,
			   struct synthetic *synthetic, const char *name, size_t name_len,
			   int64_t resource_id, uint32_t ttl)
{
	uint16_t qtype = q->question.qtype;
	uint16_t qclass = q->question.qclass;
	if ((qclass != SP_DNS_CLASS_IN && qclass != SP_DNS_CLASS_ANY) ||
	    (qtype != SP_DNS_TYPE_A && qtype != SP_DNS_TYPE_AAAA && qtype != SP_DNS_TYPE_ANY))
		return sp_dns_build_nodata(out, q, NULL, 0);
	struct synthetic_mapping m;
	int r = synthetic_assign(synthetic, name, name_len, resource_id, &m);
	if (r < 0)
		return r;
	if (qtype == SP_DNS_TYPE_AAAA)
		return m.has_v6 ? sp_dns_build_addresses(out, q, SP_DNS_TYPE_AAAA, m.v6, 16, ttl)
				: sp_dns_build_nodata(out, q, NULL, 0);
	return sp_dns_build_addresses(out, q, SP_DNS_TYPE_A, m.v4, 4, ttl);
}

struct dns_stub_decision dns_stub_decide(const struct sp_resource_index *index,
					 struct synthetic *synthetic, uint32_t ttl,
					 const uint8_t *msg, size_t len, int over_tcp,
					 struct sp_dns_query *q, struct sp_buf *out)
{
	struct dns_stub_decision d = {.action = DNS_STUB_DROP};
	(void)sp_dns_parse_query(msg, len, q);
	if (q->verdict == SP_DNS_VERDICT_DROP) {
		d.malformed = 1;
		return d;
	}
	if (over_tcp)
		q->reply_limit = 65535;
	if (q->verdict != SP_DNS_VERDICT_ANSWER) {
		d.malformed = 1;
		if (sp_dns_build_verdict(out, q) == 0)
			d.action = DNS_STUB_REPLY;
		return d;
	}
	const struct sp_resource *res =
	    index != NULL ? sp_resource_index_match_name(index, q->question.name.text) : NULL;
	if (res == NULL) {
		d.action = DNS_STUB_FORWARD;
		return d;
	}
	/* A protected name: answered here, whatever happens; never sent upstream. */
	d.protected_name = 1;
	int r = build_protected(out, q, synthetic, q->question.name.text,
				q->question.name.text_len, res->id, ttl);
	if (r < 0)
		r = reply_error(out, q, SP_DNS_RCODE_SERVFAIL);
	if (r == 0)
		d.action = DNS_STUB_REPLY;
	return d;
}

int dns_stub_scan_upstream(const struct sp_resource_index *index, const uint8_t *msg,
			   size_t len, struct dns_stub_leak *leak)
{
	memset(leak, 0, sizeof(*leak));
	struct sp_reader rd;
	sp_reader_init(&rd, msg, len);
	uint16_t counts[6];
	for (size_t i = 0; i < 6; i++) {
		int r = sp_reader_u16be(&rd, &counts[i]);
		if (r < 0)
			return r;
	}
	if (index == NULL)
		return 0;
	size_t offset = SP_DNS_HEADER_LEN;
	struct sp_dns_name name;
	for (unsigned i = 0; i < counts[2]; i++) {
		int r = sp_dns_name_from_wire(msg, len, offset, &name, &offset);
		if (r < 0)
			return r;
		if (len - offset < 4)
			return SP_ERR_TRUNCATED;
		offset += 4;
	}
	for (int section = 1; section <= 3; section++) {
		for (unsigned i = 0; i < counts[2 + section]; i++) {
			int r = sp_dns_name_from_wire(msg, len, offset, &name, &offset);
			uint16_t rrtype = 0, rrclass = 0, rdlength = 0;
			uint32_t ttl = 0;
			if (r == 0)
				r = sp_reader_seek(&rd, offset);
			if (r == 0)
				r = sp_reader_u16be(&rd, &rrtype);
			if (r == 0)
				r = sp_reader_u16be(&rd, &rrclass);
			if (r == 0)
				r = sp_reader_u32be(&rd, &ttl);
			if (r == 0)
				r = sp_reader_u16be(&rd, &rdlength);
			if (r == 0)
				r = sp_reader_skip(&rd, rdlength);
			if (r < 0)
				return r;
			offset = rd.pos;
			if (rrtype != SP_DNS_TYPE_A && rrtype != SP_DNS_TYPE_AAAA)
				continue;
			const struct sp_resource *res =
			    sp_resource_index_match_name(index, name.text);
			if (res != NULL) {
				leak->section = section;
				leak->rrtype = rrtype;
				leak->owner = name;
				leak->resource = res;
				return 1;
			}
		}
	}
	return 0;
}

/* ---- the I/O side ---- */

#define TCP_MAX_IN_FLIGHT 16		 /* queries per TCP client awaiting an answer */
#define TCP_OUTPUT_CAP (256u * 1024u)	 /* replies buffered per TCP client */
#define TCP_IDLE_SECONDS 10
#define UDP_READS_PER_EVENT 64
#define SWEEP_INTERVAL_MS 250
#define NONE SIZE_MAX

struct dns_stub;

/* One c-ares channel (UDP or TCP upstream) and the IDs its queries hold. */
struct stub_channel {
	struct dns_stub *stub;
	ares_channel ares;
	int ares_ready;
	struct event *timer;
	size_t active;
	uint8_t ids_in_use[65536 / 8];
};

/* A socket c-ares asked us to watch. Owned by the stub's list; freed when c-ares drops it. */
struct stub_watch {
	struct stub_channel *channel;
	ares_socket_t fd;
	struct event *event;
	struct stub_watch *next;
};

/* One TCP client connection, in a fixed slot; generation tells reused slots apart. */
struct stub_tcp_client {
	struct dns_stub *stub;
	struct bufferevent *bev;
	uint64_t generation;
	size_t slot;
	unsigned in_flight;
	int processing;
};

/* One forwarded query, in a fixed slot of the pending table. */
struct stub_pending {
	int in_use;
	int answered; /* the client has had its reply (or is gone) */
	struct stub_channel *channel;
	uint16_t upstream_id;
	int over_tcp;
	struct sockaddr_storage peer;
	socklen_t peer_len;
	size_t tcp_slot;
	uint64_t tcp_generation;
	int64_t start_ns;
	struct sp_dns_query query;
	size_t next_free;
};

struct dns_stub {
	struct event_base *base;
	int udp_fd;
	struct event *udp_event;
	struct evconnlistener *listener;
	uint16_t port;
	int ares_initialised;
	struct stub_channel udp_channel;
	struct stub_channel tcp_channel;
	struct stub_watch *watches;
	struct stub_tcp_client *tcp_clients;
	size_t max_tcp_clients;
	size_t tcp_count;
	uint64_t next_generation;
	struct stub_pending *pending;
	size_t max_pending;
	size_t pending_count;
	size_t pending_free;
	struct event *sweep;
	struct sp_resource_index *index;
	struct synthetic *synthetic;
	uint32_t ttl;
	int64_t deadline_ns;
	uint8_t random_pool[256];
	size_t random_used;
	uint8_t reply[2 + 65535];
	uint8_t tcp_query[65535];

	struct sp_metric m_queries_udp;
	struct sp_metric m_queries_tcp;
	struct sp_metric m_protected;
	struct sp_metric m_forwarded;
	struct sp_metric m_failures;
	struct sp_metric m_malformed;
	struct sp_metric m_latency;
};

static const double latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
					0.01,	0.025,	 0.05,	 0.1,	0.25,	0.5,
					1.0,	2.5,	 5.0};

static int64_t monotonic_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Two random bytes from a pool refilled with RAND_bytes (-1 when that fails). */
static int random_u16(struct dns_stub *stub, uint16_t *out)
{
	if (stub->random_used + 2 > sizeof(stub->random_pool)) {
		if (RAND_bytes(stub->random_pool, (int)sizeof(stub->random_pool)) != 1)
			return -1;
		stub->random_used = 0;
	}
	*out = (uint16_t)((stub->random_pool[stub->random_used] << 8) |
			  stub->random_pool[stub->random_used + 1]);
	stub->random_used += 2;
	return 0;
}

static int id_taken(const struct stub_channel *ch, uint16_t id)
{
	return (ch->ids_in_use[id >> 3] >> (id & 7)) & 1;
}

static void id_set(struct stub_channel *ch, uint16_t id, int taken)
{
	if (taken)
		ch->ids_in_use[id >> 3] = (uint8_t)(ch->ids_in_use[id >> 3] | (1u << (id & 7)));
	else
		ch->ids_in_use[id >> 3] = (uint8_t)(ch->ids_in_use[id >> 3] & ~(1u << (id & 7)));
}

/* ---- c-ares on libevent ---- */

static void channel_reschedule(struct stub_channel *ch)
{
	if (ch->active == 0) {
		evtimer_del(ch->timer);
		return;
	}
	struct timeval max = {1, 0}, tv;
	struct timeval *next = ares_timeout(ch->ares, &max, &tv);
	evtimer_add(ch->timer, next);
}

static void on_channel_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct stub_channel *ch = arg;
	ares_process_fd(ch->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	channel_reschedule(ch);
}

static void on_watch_ready(evutil_socket_t fd, short what, void *arg)
{
	struct stub_watch *watch = arg;
	/* c-ares may drop this watch (and free it) while processing: copy what we need. */
	struct stub_channel *ch = watch->channel;
	ares_process_fd(ch->ares, (what & EV_READ) ? (ares_socket_t)fd : ARES_SOCKET_BAD,
			(what & EV_WRITE) ? (ares_socket_t)fd : ARES_SOCKET_BAD);
	channel_reschedule(ch);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct stub_channel *ch = data;
	struct dns_stub *stub = ch->stub;
	struct stub_watch **link = &stub->watches;
	while (*link != NULL && !((*link)->channel == ch && (*link)->fd == fd))
		link = &(*link)->next;
	struct stub_watch *watch = *link;
	if (watch != NULL) {
		event_free(watch->event);
		watch->event = NULL;
	}
	if (!readable && !writable) {
		if (watch != NULL) {
			*link = watch->next;
			free(watch);
		}
		return;
	}
	if (watch == NULL) {
		watch = calloc(1, sizeof(*watch));
		if (watch == NULL) {
			SP_LOG(SP_LOG_ERROR, "dns stub: out of memory watching an upstream socket",
			       SP_LOG_INT("fd", fd));
			return;
		}
		watch->channel = ch;
		watch->fd = fd;
		watch->next = stub->watches;
		stub->watches = watch;
	}
	short events = (short)(EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
	watch->event = event_new(stub->base, fd, events, on_watch_ready, watch);
	if (watch->event == NULL || event_add(watch->event, NULL) == -1)
		SP_LOG(SP_LOG_ERROR, "dns stub: cannot watch an upstream socket",
		       SP_LOG_INT("fd", fd));
}

/* ---- replies to clients ---- */

static struct stub_tcp_client *tcp_client_if_alive(struct dns_stub *stub, size_t slot,
						   uint64_t generation)
{
	if (slot >= stub->max_tcp_clients)
		return NULL;
	struct stub_tcp_client *c = &stub->tcp_clients[slot];
	return c->bev != NULL && c->generation == generation ? c : NULL;
}

static void tcp_process(struct stub_tcp_client *c);

static void send_udp(struct dns_stub *stub, const struct sockaddr_storage *peer,
		     socklen_t peer_len, const uint8_t *data, size_t len)
{
	if (sendto(stub->udp_fd, data, len, 0, (const struct sockaddr *)peer, peer_len) == -1)
		sp_metric_add(&stub->m_failures, 1);
}

static void send_tcp(struct stub_tcp_client *c, const uint8_t *data, size_t len)
{
	uint8_t prefix[2] = {(uint8_t)(len >> 8), (uint8_t)len};
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (evbuffer_add(out, prefix, 2) == -1 || evbuffer_add(out, data, len) == -1)
		sp_metric_add(&c->stub->m_failures, 1);
}

/* Gives a pending query's client its reply, once; the slot itself stays until c-ares ends. */
static void pending_deliver(struct dns_stub *stub, struct stub_pending *p, const uint8_t *data,
			    size_t len)
{
	if (p->answered)
		return;
	p->answered = 1;
	sp_metric_observe(&stub->m_latency, (double)(monotonic_ns() - p->start_ns) / 1e9);
	if (!p->over_tcp) {
		if (data != NULL)
			send_udp(stub, &p->peer, p->peer_len, data, len);
		return;
	}
	struct stub_tcp_client *c = tcp_client_if_alive(stub, p->tcp_slot, p->tcp_generation);
	if (c == NULL)
		return;
	c->in_flight--;
	if (data != NULL)
		send_tcp(c, data, len);
	if (!c->processing)
		tcp_process(c);
}

static void pending_fail(struct dns_stub *stub, struct stub_pending *p)
{
	struct sp_buf out;
	sp_buf_init_fixed(&out, stub->reply, sizeof(stub->reply));
	sp_metric_add(&stub->m_failures, 1);
	if (reply_error(&out, &p->query, SP_DNS_RCODE_SERVFAIL) == 0)
		pending_deliver(stub, p, out.data, out.len);
	else
		pending_deliver(stub, p, NULL, 0);
}

static void pending_release(struct dns_stub *stub, struct stub_pending *p)
{
	id_set(p->channel, p->upstream_id, 0);
	p->channel->active--;
	p->in_use = 0;
	p->next_free = stub->pending_free;
	stub->pending_free = (size_t)(p - stub->pending);
	stub->pending_count--;
}

/*
 * Relays an upstream reply with the client's ID, unless it carries an address of a
 * protected name: then the client gets that name's synthetic address (an A/AAAA
 * question answered in the answer section, i.e. a CNAME chain into a protected name),
 * or SERVFAIL.
 */
static void relay(struct dns_stub *stub, struct stub_pending *p, const uint8_t *reply,
		  size_t len)
{
	struct dns_stub_leak leak;
	int found = dns_stub_scan_upstream(stub->index, reply, len, &leak);
	if (found == 0) {
		memcpy(stub->reply, reply, len);
		(void)sp_dns_set_id(stub->reply, len, p->query.header.id);
		pending_deliver(stub, p, stub->reply, len);
		return;
	}
	uint16_t qtype = p->query.question.qtype;
	if (found == 1 && leak.section == 1 &&
	    (qtype == SP_DNS_TYPE_A || qtype == SP_DNS_TYPE_AAAA || qtype == SP_DNS_TYPE_ANY)) {
		struct sp_buf out;
		sp_buf_init_fixed(&out, stub->reply, sizeof(stub->reply));
		sp_metric_add(&stub->m_protected, 1);
		if (build_protected(&out, &p->query, stub->synthetic, leak.owner.text,
				    leak.owner.text_len, leak.resource->id, stub->ttl) == 0) {
			pending_deliver(stub, p, out.data, out.len);
			return;
		}
	}
	pending_fail(stub, p);
}

static void on_upstream_answer(void *arg, int status, int timeouts, unsigned char *abuf,
			       int alen)
{
	(void)timeouts;
	struct stub_pending *p = arg;
	struct dns_stub *stub = p->channel->stub;
	if (status == ARES_EDESTRUCTION) {
		pending_release(stub, p);
		return;
	}
	if (!p->answered) {
		size_t len = alen > 0 ? (size_t)alen : 0;
		if (status != ARES_SUCCESS || abuf == NULL || len < SP_DNS_HEADER_LEN ||
		    len > 65535) {
			pending_fail(stub, p);
		} else if (!p->over_tcp && len > p->query.reply_limit) {
			/* Came over TCP upstream yet too big for this client: tell it to retry. */
			struct sp_buf out;
			sp_buf_init_fixed(&out, stub->reply, sizeof(stub->reply));
			if (reply_error(&out, &p->query, SP_DNS_RCODE_NOERROR) == 0) {
				out.data[2] = (uint8_t)(out.data[2] | (SP_DNS_FLAG_TC >> 8));
				pending_deliver(stub, p, out.data, out.len);
			} else {
				pending_fail(stub, p);
			}
		} else {
			relay(stub, p, abuf, len);
		}
	}
	pending_release(stub, p);
}

/* Runs the deadline sweep while queries are pending; an idle stub sets no timers. */
static void sweep_schedule(struct dns_stub *stub)
{
	struct timeval interval = {0, SWEEP_INTERVAL_MS * 1000};
	if (stub->pending_count > 0 && !evtimer_pending(stub->sweep, NULL))
		evtimer_add(stub->sweep, &interval);
}

/* The hard deadline: a client waits at most deadline_ms, whatever c-ares still tries. */
static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct dns_stub *stub = arg;
	int64_t now = monotonic_ns();
	for (size_t i = 0; i < stub->max_pending && stub->pending_count > 0; i++) {
		struct stub_pending *p = &stub->pending[i];
		if (p->in_use && !p->answered && now - p->start_ns > stub->deadline_ns)
			pending_fail(stub, p);
	}
	sweep_schedule(stub);
}

/* ---- queries ---- */

struct query_origin {
	int over_tcp;
	const struct sockaddr_storage *peer;
	socklen_t peer_len;
	struct stub_tcp_client *client;
};

static void reply_now(struct dns_stub *stub, const struct query_origin *from, const uint8_t *data,
		      size_t len)
{
	if (from->over_tcp)
		send_tcp(from->client, data, len);
	else
		send_udp(stub, from->peer, from->peer_len, data, len);
}

static void forward(struct dns_stub *stub, uint8_t *msg, size_t len, const struct sp_dns_query *q,
		    const struct query_origin *from)
{
	struct stub_channel *ch = from->over_tcp ? &stub->tcp_channel : &stub->udp_channel;
	uint16_t id = 0;
	int found = 0;
	if (stub->pending_free != NONE) {
		for (int tries = 0; tries < 64 && !found; tries++) {
			if (random_u16(stub, &id) < 0)
				break;
			found = !id_taken(ch, id);
		}
	}
	if (!found) {
		/* Table full (or no randomness): SERVFAIL now rather than queueing without bound. */
		struct sp_buf out;
		sp_buf_init_fixed(&out, stub->reply, sizeof(stub->reply));
		sp_metric_add(&stub->m_failures, 1);
		if (reply_error(&out, q, SP_DNS_RCODE_SERVFAIL) == 0)
			reply_now(stub, from, out.data, out.len);
		return;
	}
	size_t slot = stub->pending_free;
	struct stub_pending *p = &stub->pending[slot];
	stub->pending_free = p->next_free;
	stub->pending_count++;
	memset(p, 0, sizeof(*p));
	p->in_use = 1;
	p->channel = ch;
	p->upstream_id = id;
	p->over_tcp = from->over_tcp;
	if (from->over_tcp) {
		p->tcp_slot = from->client->slot;
		p->tcp_generation = from->client->generation;
		from->client->in_flight++;
	} else {
		memcpy(&p->peer, from->peer, from->peer_len);
		p->peer_len = from->peer_len;
	}
	p->start_ns = monotonic_ns();
	p->query = *q;
	id_set(ch, id, 1);
	ch->active++;
	sweep_schedule(stub);
	sp_metric_add(&stub->m_forwarded, 1);
	(void)sp_dns_set_id(msg, len, id);
	/* The callback may run before ares_send returns: p must not be touched after. */
	ares_send(ch->ares, msg, (int)len, on_upstream_answer, p);
	channel_reschedule(ch);
}

static void handle_query(struct dns_stub *stub, uint8_t *msg, size_t len,
			 const struct query_origin *from)
{
	struct sp_dns_query q;
	struct sp_buf out;
	sp_buf_init_fixed(&out, stub->reply, sizeof(stub->reply));
	sp_metric_add(from->over_tcp ? &stub->m_queries_tcp : &stub->m_queries_udp, 1);
	struct dns_stub_decision d =
	    dns_stub_decide(stub->index, stub->synthetic, stub->ttl, msg, len, from->over_tcp, &q,
			    &out);
	if (d.malformed)
		sp_metric_add(&stub->m_malformed, 1);
	if (d.protected_name)
		sp_metric_add(&stub->m_protected, 1);
	if (d.action == DNS_STUB_REPLY)
		reply_now(stub, from, out.data, out.len);
	else if (d.action == DNS_STUB_FORWARD)
		forward(stub, msg, len, &q, from);
}

static void on_udp_readable(evutil_socket_t fd, short what, void *arg)
{
	(void)what;
	struct dns_stub *stub = arg;
	for (int i = 0; i < UDP_READS_PER_EVENT; i++) {
		uint8_t msg[DNS_STUB_MAX_UDP_QUERY + 1];
		struct sockaddr_storage peer;
		socklen_t peer_len = sizeof(peer);
		ssize_t n = recvfrom(fd, msg, sizeof(msg), MSG_TRUNC, (struct sockaddr *)&peer,
				     &peer_len);
		if (n == -1)
			break;
		if ((size_t)n > DNS_STUB_MAX_UDP_QUERY) {
			/* Oversized: no legitimate query is this big over UDP. */
			sp_metric_add(&stub->m_queries_udp, 1);
			sp_metric_add(&stub->m_malformed, 1);
			continue;
		}
		struct query_origin from = {.peer = &peer, .peer_len = peer_len};
		handle_query(stub, msg, (size_t)n, &from);
	}
}

/* ---- TCP clients ---- */

static void tcp_close(struct stub_tcp_client *c)
{
	struct dns_stub *stub = c->stub;
	bufferevent_free(c->bev);
	c->bev = NULL;
	c->generation = 0;
	c->in_flight = 0;
	stub->tcp_count--;
}

static void tcp_process(struct stub_tcp_client *c)
{
	struct dns_stub *stub = c->stub;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	c->processing = 1;
	while (c->in_flight < TCP_MAX_IN_FLIGHT &&
	       evbuffer_get_length(bufferevent_get_output(c->bev)) < TCP_OUTPUT_CAP) {
		uint8_t prefix[2];
		if (evbuffer_copyout(in, prefix, 2) < 2)
			break;
		size_t len = (size_t)prefix[0] << 8 | prefix[1];
		if (evbuffer_get_length(in) < 2 + len)
			break;
		evbuffer_drain(in, 2);
		if (evbuffer_remove(in, stub->tcp_query, len) != (int)len)
			break;
		struct query_origin from = {.over_tcp = 1, .client = c};
		handle_query(stub, stub->tcp_query, len, &from);
	}
	c->processing = 0;
}

static void on_tcp_read(struct bufferevent *bev, void *arg)
{
	(void)bev;
	tcp_process(arg);
}

static void on_tcp_write(struct bufferevent *bev, void *arg)
{
	(void)bev;
	struct stub_tcp_client *c = arg;
	if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
		tcp_process(c);
}

static void on_tcp_event(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	tcp_close(arg);
}

static void on_tcp_accept(struct evconnlistener *listener, evutil_socket_t fd,
			  struct sockaddr *addr, int addr_len, void *arg)
{
	(void)listener;
	(void)addr;
	(void)addr_len;
	struct dns_stub *stub = arg;
	size_t slot = 0;
	while (slot < stub->max_tcp_clients && stub->tcp_clients[slot].bev != NULL)
		slot++;
	if (slot == stub->max_tcp_clients) {
		sp_metric_add(&stub->m_failures, 1);
		evutil_closesocket(fd);
		return;
	}
	struct stub_tcp_client *c = &stub->tcp_clients[slot];
	c->bev = bufferevent_socket_new(stub->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (c->bev == NULL) {
		evutil_closesocket(fd);
		return;
	}
	c->stub = stub;
	c->slot = slot;
	c->generation = ++stub->next_generation;
	c->in_flight = 0;
	c->processing = 0;
	stub->tcp_count++;
	struct timeval idle = {TCP_IDLE_SECONDS, 0};
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	/* Stop reading when a client has two full-size queries waiting. */
	bufferevent_setwatermark(c->bev, EV_READ, 0, 2 * (2 + 65535));
	bufferevent_setcb(c->bev, on_tcp_read, on_tcp_write, on_tcp_event, c);
	if (bufferevent_enable(c->bev, EV_READ | EV_WRITE) == -1)
		tcp_close(c);
}

/* ---- set-up ---- */

static int parse_listen(const char *text, uint16_t port, struct sockaddr_storage *ss,
			socklen_t *len, struct sp_diag *diag)
{
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, text, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		*len = sizeof(*in4);
		return 0;
	}
	if (inet_pton(AF_INET6, text, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len = sizeof(*in6);
		return 0;
	}
	char echo[80];
	return sp_diag_set(diag, SP_ERR_INVALID, "listen address \"%s\" is not an IP address",
			   sp_diag_echo(text, strlen(text), echo, sizeof(echo)));
}

static int bind_socket(int type, const struct sockaddr_storage *ss, socklen_t len, int *out,
		       struct sp_diag *diag)
{
	*out = -1;
	int fd = socket(ss->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return sp_diag_set(diag, SP_ERR_IO, "socket: %s", strerror(errno));
	int one = 1;
	/* Room for bursts: 1 MiB of queries queued (the kernel may cap it lower). */
	int rcvbuf = 1 << 20;
	if (type == SOCK_DGRAM)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (type == SOCK_STREAM &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1) {
		int e = errno;
		close(fd);
		return sp_diag_set(diag, SP_ERR_IO, "setsockopt: %s", strerror(e));
	}
	if (bind(fd, (const struct sockaddr *)ss, len) == -1 ||
	    (type == SOCK_STREAM && listen(fd, 128) == -1)) {
		int e = errno;
		close(fd);
		return sp_diag_set(diag, SP_ERR_IO, "cannot listen for DNS %s: %s",
				   type == SOCK_STREAM ? "over TCP" : "over UDP", strerror(e));
	}
	*out = fd;
	return 0;
}

static int bind_listeners(struct dns_stub *stub, const struct dns_stub_config *cfg,
			  struct sp_diag *diag)
{
	const char *text = cfg->listen_address != NULL ? cfg->listen_address
						       : DNS_STUB_DEFAULT_LISTEN;
	uint16_t port = cfg->listen_port_any ? 0
			: cfg->listen_port != 0 ? cfg->listen_port
						: DNS_STUB_DEFAULT_PORT;
	struct sockaddr_storage ss;
	socklen_t len;
	int r = parse_listen(text, port, &ss, &len, diag);
	if (r < 0)
		return r;
	/* With port 0 the kernel picks the UDP port; TCP then takes the same one. */
	int tcp_fd = -1;
	for (int attempt = 0; attempt < 8; attempt++) {
		r = bind_socket(SOCK_DGRAM, &ss, len, &stub->udp_fd, diag);
		if (r < 0)
			return r;
		struct sockaddr_storage bound;
		socklen_t bound_len = sizeof(bound);
		if (getsockname(stub->udp_fd, (struct sockaddr *)&bound, &bound_len) == -1)
			return sp_diag_set(diag, SP_ERR_IO, "getsockname: %s", strerror(errno));
		stub->port = ntohs(bound.ss_family == AF_INET
				       ? ((struct sockaddr_in *)&bound)->sin_port
				       : ((struct sockaddr_in6 *)&bound)->sin6_port);
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = htons(stub->port);
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(stub->port);
		r = bind_socket(SOCK_STREAM, &ss, len, &tcp_fd, diag);
		if (r == 0 || port != 0)
			break;
		close(stub->udp_fd);
		stub->udp_fd = -1;
		((struct sockaddr_in *)&ss)->sin_port = 0;
		if (ss.ss_family == AF_INET6)
			((struct sockaddr_in6 *)&ss)->sin6_port = 0;
	}
	if (r < 0)
		return r;
	stub->listener = evconnlistener_new(stub->base, on_tcp_accept, stub,
					    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0,
					    tcp_fd);
	if (stub->listener == NULL) {
		close(tcp_fd);
		return sp_diag_set(diag, SP_ERR_NOMEM, "cannot set up the TCP listener");
	}
	stub->udp_event =
	    event_new(stub->base, stub->udp_fd, EV_READ | EV_PERSIST, on_udp_readable, stub);
	if (stub->udp_event == NULL || event_add(stub->udp_event, NULL) == -1)
		return sp_diag_set(diag, SP_ERR_NOMEM, "cannot watch the UDP socket");
	return 0;
}

static int channel_init(struct dns_stub *stub, struct stub_channel *ch, int over_tcp,
			const struct dns_stub_config *cfg, struct sp_diag *diag)
{
	ch->stub = stub;
	ch->timer = evtimer_new(stub->base, on_channel_timer, ch);
	if (ch->timer == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "cannot create the upstream timer");
	struct ares_options opts;
	memset(&opts, 0, sizeof(opts));
	/*
	 * UDP: relay truncated answers as they are (the application retries over TCP, and
	 * that retry comes to our TCP side). TCP: keep upstream connections open.
	 */
	opts.flags = over_tcp ? ARES_FLAG_USEVC | ARES_FLAG_STAYOPEN : ARES_FLAG_IGNTC;
	opts.timeout = (int)(cfg->upstream_timeout_ms != 0 ? cfg->upstream_timeout_ms
							    : DNS_STUB_DEFAULT_UPSTREAM_TIMEOUT_MS);
	opts.tries = (int)(cfg->upstream_tries != 0 ? cfg->upstream_tries
						    : DNS_STUB_DEFAULT_UPSTREAM_TRIES);
	opts.sock_state_cb = on_sock_state;
	opts.sock_state_cb_data = ch;
	int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
	int status = ares_init_options(&ch->ares, &opts, mask);
	if (status != ARES_SUCCESS)
		return sp_diag_set(diag, SP_ERR_NOMEM, "c-ares: %s", ares_strerror(status));
	ch->ares_ready = 1;
	return 0;
}

/* True when an upstream from resolv.conf is our own listen address (we'd ask ourselves). */
static int upstream_is_us(const struct dns_stub *stub, const struct ares_addr_port_node *node,
			  const struct sockaddr_storage *listen)
{
	int port = node->udp_port != 0 ? node->udp_port : 53;
	if (port != stub->port)
		return 0;
	if (node->family == AF_INET && listen->ss_family == AF_INET)
		return memcmp(&node->addr.addr4, &((const struct sockaddr_in *)listen)->sin_addr,
			      4) == 0;
	if (node->family == AF_INET6 && listen->ss_family == AF_INET6)
		return memcmp(&node->addr.addr6, &((const struct sockaddr_in6 *)listen)->sin6_addr,
			      16) == 0;
	return 0;
}

#define MAX_UPSTREAMS 16

static int set_upstreams(struct dns_stub *stub, const struct dns_stub_config *cfg,
			 struct sp_diag *diag)
{
	int r = 0;
	struct ares_addr_port_node *list = NULL;
	if (cfg->upstreams != NULL) {
		int status = ares_set_servers_ports_csv(stub->udp_channel.ares, cfg->upstreams);
		if (status != ARES_SUCCESS) {
			char echo[80];
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "upstreams \"%s\": expected ADDR[:PORT],... (%s)",
					   sp_diag_echo(cfg->upstreams, strlen(cfg->upstreams),
							echo, sizeof(echo)),
					   ares_strerror(status));
		}
	}
	if (ares_get_servers_ports(stub->udp_channel.ares, &list) != ARES_SUCCESS) {
		r = sp_diag_set(diag, SP_ERR_NOMEM, "c-ares: cannot read the upstream list");
		goto out;
	}
	/* Keep every upstream but ourselves (resolv.conf may already point at us). */
	struct ares_addr_port_node kept[MAX_UPSTREAMS];
	size_t count = 0;
	struct sockaddr_storage listen;
	socklen_t listen_len;
	const char *text = cfg->listen_address != NULL ? cfg->listen_address
						       : DNS_STUB_DEFAULT_LISTEN;
	r = parse_listen(text, stub->port, &listen, &listen_len, diag);
	if (r < 0)
		goto out;
	for (struct ares_addr_port_node *n = list; n != NULL && count < MAX_UPSTREAMS;
	     n = n->next) {
		if (upstream_is_us(stub, n, &listen))
			continue;
		kept[count] = *n;
		kept[count].next = NULL;
		if (count > 0)
			kept[count - 1].next = &kept[count];
		count++;
	}
	if (count == 0) {
		r = sp_diag_set(diag, SP_ERR_NOT_FOUND,
				"no upstream resolver: give --upstream or fix /etc/resolv.conf");
		goto out;
	}
	if (ares_set_servers_ports(stub->udp_channel.ares, kept) != ARES_SUCCESS ||
	    ares_set_servers_ports(stub->tcp_channel.ares, kept) != ARES_SUCCESS) {
		r = sp_diag_set(diag, SP_ERR_NOMEM, "c-ares: cannot set the upstream list");
		goto out;
	}
	char addr[INET6_ADDRSTRLEN];
	for (size_t i = 0; i < count; i++) {
		if (inet_ntop(kept[i].family, &kept[i].addr, addr, sizeof(addr)) == NULL)
			continue;
		SP_LOG(SP_LOG_INFO, "dns stub upstream", SP_LOG_STR("address", addr),
		       SP_LOG_INT("port", kept[i].udp_port != 0 ? kept[i].udp_port : 53));
	}
out:
	if (list != NULL)
		ares_free_data(list);
	return r;
}

static void metric(struct sp_metric *m, const char *name, const char *help, const char *labels,
		   enum sp_metric_type type)
{
	m->name = name;
	m->help = help;
	m->labels = labels;
	m->type = type;
}

static int register_metrics(struct dns_stub *stub, struct sp_metrics_registry *registry,
			    struct sp_diag *diag)
{
	metric(&stub->m_queries_udp, "sallyport_client_dns_queries_total",
	       "DNS queries received by the stub", "transport=\"udp\"", SP_METRIC_COUNTER);
	metric(&stub->m_queries_tcp, "sallyport_client_dns_queries_total",
	       "DNS queries received by the stub", "transport=\"tcp\"", SP_METRIC_COUNTER);
	metric(&stub->m_protected, "sallyport_client_dns_protected_answers_total",
	       "Queries for protected names answered by the stub", NULL, SP_METRIC_COUNTER);
	metric(&stub->m_forwarded, "sallyport_client_dns_forwarded_total",
	       "Queries forwarded to the upstream resolvers", NULL, SP_METRIC_COUNTER);
	metric(&stub->m_failures, "sallyport_client_dns_failures_total",
	       "SERVFAIL sent by the stub, replies that could not be sent, refused clients",
	       NULL, SP_METRIC_COUNTER);
	metric(&stub->m_malformed, "sallyport_client_dns_malformed_total",
	       "Queries refused or dropped as malformed", NULL, SP_METRIC_COUNTER);
	metric(&stub->m_latency, "sallyport_client_dns_forward_latency_seconds",
	       "Time from receiving a forwarded query to answering it", NULL,
	       SP_METRIC_HISTOGRAM);
	stub->m_latency.bounds = latency_bounds;
	stub->m_latency.bound_count = sizeof(latency_bounds) / sizeof(latency_bounds[0]);
	if (registry == NULL)
		return 0;
	struct sp_metric *all[] = {&stub->m_queries_udp, &stub->m_queries_tcp, &stub->m_protected,
				   &stub->m_forwarded,	 &stub->m_failures,    &stub->m_malformed,
				   &stub->m_latency};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (sp_metrics_register(registry, all[i]) < 0)
			return sp_diag_set(diag, SP_ERR_INVALID, "metric %s registered twice",
					   all[i]->name);
	return 0;
}

int dns_stub_new(struct event_base *base, const struct dns_stub_config *cfg,
		 struct dns_stub **out, struct sp_diag *diag)
{
	int r = SP_ERR_NOMEM;
	*out = NULL;
	struct dns_stub *stub = calloc(1, sizeof(*stub));
	if (stub == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory for the DNS stub");
	stub->base = base;
	stub->udp_fd = -1;
	stub->random_used = sizeof(stub->random_pool);
	stub->ttl = cfg->answer_ttl != 0 ? cfg->answer_ttl : DNS_STUB_DEFAULT_TTL;
	stub->deadline_ns = (int64_t)(cfg->deadline_ms != 0 ? cfg->deadline_ms
							    : DNS_STUB_DEFAULT_DEADLINE_MS) *
			    1000000;
	stub->max_pending = cfg->max_pending != 0 ? cfg->max_pending : DNS_STUB_DEFAULT_MAX_PENDING;
	stub->max_tcp_clients =
	    cfg->max_tcp_clients != 0 ? cfg->max_tcp_clients : DNS_STUB_DEFAULT_MAX_TCP_CLIENTS;
	if (stub->max_pending > 16384 || stub->max_tcp_clients > 4096) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
				"max_pending is at most 16384 and max_tcp_clients at most 4096");
		goto out;
	}
	r = register_metrics(stub, cfg->metrics, diag);
	if (r < 0)
		goto out;

	struct synthetic_config sc = {.v4_range = cfg->synthetic_v4,
				      .v6_range = cfg->synthetic_v6 != NULL ? cfg->synthetic_v6
									    : SYNTHETIC_DEFAULT_V6,
				      .max_entries = cfg->synthetic_max_entries};
	if (cfg->synthetic_v6 != NULL && strcmp(cfg->synthetic_v6, "off") == 0)
		sc.v6_range = NULL;
	if (RAND_bytes((unsigned char *)&sc.hash_seed, sizeof(sc.hash_seed)) != 1) {
		r = sp_diag_set(diag, SP_ERR_CRYPTO, "no randomness for the DNS stub");
		goto out;
	}
	r = synthetic_new(&sc, &stub->synthetic, diag);
	if (r < 0)
		goto out;

	r = SP_ERR_NOMEM;
	stub->pending = calloc(stub->max_pending, sizeof(*stub->pending));
	stub->tcp_clients = calloc(stub->max_tcp_clients, sizeof(*stub->tcp_clients));
	stub->sweep = evtimer_new(base, on_sweep, stub);
	if (stub->pending == NULL || stub->tcp_clients == NULL || stub->sweep == NULL) {
		sp_diag_set(diag, r, "out of memory for the DNS stub's tables");
		goto out;
	}
	for (size_t i = 0; i < stub->max_pending; i++)
		stub->pending[i].next_free = i + 1 < stub->max_pending ? i + 1 : NONE;
	stub->pending_free = 0;

	if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
		r = sp_diag_set(diag, SP_ERR_INTERNAL, "c-ares did not initialise");
		goto out;
	}
	stub->ares_initialised = 1;
	r = bind_listeners(stub, cfg, diag);
	if (r < 0)
		goto out;
	r = channel_init(stub, &stub->udp_channel, 0, cfg, diag);
	if (r < 0)
		goto out;
	r = channel_init(stub, &stub->tcp_channel, 1, cfg, diag);
	if (r < 0)
		goto out;
	r = set_upstreams(stub, cfg, diag);
	if (r < 0)
		goto out;
	*out = stub;
	stub = NULL;
	r = 0;
out:
	dns_stub_free(stub);
	return r;
}

static void channel_free(struct stub_channel *ch)
{
	/* ares_destroy ends every query with ARES_EDESTRUCTION, releasing its slot. */
	if (ch->ares_ready)
		ares_destroy(ch->ares);
	ch->ares_ready = 0;
	if (ch->timer != NULL)
		event_free(ch->timer);
	ch->timer = NULL;
}

void dns_stub_free(struct dns_stub *stub)
{
	if (stub == NULL)
		return;
	channel_free(&stub->udp_channel);
	channel_free(&stub->tcp_channel);
	while (stub->watches != NULL) {
		struct stub_watch *w = stub->watches;
		stub->watches = w->next;
		if (w->event != NULL)
			event_free(w->event);
		free(w);
	}
	if (stub->tcp_clients != NULL)
		for (size_t i = 0; i < stub->max_tcp_clients; i++)
			if (stub->tcp_clients[i].bev != NULL)
				tcp_close(&stub->tcp_clients[i]);
	if (stub->listener != NULL)
		evconnlistener_free(stub->listener);
	if (stub->udp_event != NULL)
		event_free(stub->udp_event);
	if (stub->udp_fd != -1)
		close(stub->udp_fd);
	if (stub->sweep != NULL)
		event_free(stub->sweep);
	if (stub->ares_initialised)
		ares_library_cleanup();
	free(stub->pending);
	free(stub->tcp_clients);
	sp_resource_index_free(stub->index);
	synthetic_free(stub->synthetic);
	free(stub);
}

int dns_stub_set_resources(struct dns_stub *stub, const struct sp_resource *resources,
			   size_t count, struct sp_diag *diag)
{
	struct sp_resource_index *index = NULL;
	int r = sp_resource_index_build(resources, count, &index, diag);
	if (r < 0)
		return r;
	sp_resource_index_free(stub->index);
	stub->index = index;
	return 0;
}

uint16_t dns_stub_port(const struct dns_stub *stub)
{
	return stub->port;
}

struct synthetic *dns_stub_synthetic(struct dns_stub *stub)
{
	return stub->synthetic;
}
