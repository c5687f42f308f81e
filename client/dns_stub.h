/*
 * client/dns_stub.h — the client's DNS stub: answers protected names, forwards the rest.
 *
 * The stub listens on UDP and TCP (default 127.0.0.53:53). For each query it decides,
 * with dns_stub_decide (pure, unit-tested):
 *   - malformed input: the reply shared/dns.h's verdict asks for (FORMERR, NOTIMP,
 *     BADVERS), or nothing (DROP);
 *   - a protected name (exact name, alias or wildcard of a resource in the current
 *     resource set): A with the name's synthetic IPv4 address, AAAA with its synthetic
 *     IPv6 address or, when IPv6 is off, NODATA at once (AAAA never stalls), any other
 *     type NODATA. The TTL is short (default 30 s) so changes take effect quickly. The
 *     resource's real address is never returned and the name never leaves the machine;
 *   - anything else: forwarded unchanged, but for a fresh random ID, to the upstream
 *     resolvers with c-ares, and the answer relayed with the client's ID. UDP queries go
 *     upstream over UDP and a truncated answer is relayed truncated (the application
 *     retries over TCP, as it would without us); TCP queries go upstream over TCP.
 *     No answer within the deadline, or upstream failure: SERVFAIL. A reply that holds
 *     an address record of a protected name (a CNAME chain into one) is not relayed:
 *     for an A/AAAA question with the record in the answer section the client gets the
 *     protected name's synthetic address instead, otherwise SERVFAIL.
 *
 * Bounds: pending forwarded queries (max_pending; above it SERVFAIL at once), TCP
 * clients (max_tcp_clients; more are closed), queries in flight per TCP client, bytes
 * buffered per TCP client, idle time per TCP client, and the synthetic table's entries.
 *
 * Ownership and threads: dns_stub_new allocates the stub on the caller's event_base
 * (libevent 2.1); dns_stub_free (safe on NULL) closes every socket and event and frees
 * everything, and must be called before the base is freed. The stub copies every config
 * string it keeps. All calls must be made on the thread that runs the base.
 */
#ifndef SALLYPORT_CLIENT_DNS_STUB_H
#define SALLYPORT_CLIENT_DNS_STUB_H

#include <stddef.h>
#include <stdint.h>

#include "client/synthetic.h"
#include "shared/buf.h"
#include "shared/dns.h"
#include "shared/error.h"
#include "shared/metrics.h"
#include "shared/resource.h"
#include "shared/resource_index.h"

struct event_base;
struct dns_stub;

#define DNS_STUB_DEFAULT_LISTEN "127.0.0.53"
#define DNS_STUB_DEFAULT_PORT 53
#define DNS_STUB_DEFAULT_TTL 30
#define DNS_STUB_DEFAULT_MAX_PENDING 1024
#define DNS_STUB_DEFAULT_MAX_TCP_CLIENTS 64
/* Per-try upstream timeout and tries (c-ares), and our own hard deadline per query. */
#define DNS_STUB_DEFAULT_UPSTREAM_TIMEOUT_MS 1000
#define DNS_STUB_DEFAULT_UPSTREAM_TRIES 2
#define DNS_STUB_DEFAULT_DEADLINE_MS 4000
/* Largest query accepted over UDP; bigger datagrams are dropped. */
#define DNS_STUB_MAX_UDP_QUERY 4096

/* Configuration. Every pointer is only read during dns_stub_new. 0 / NULL: the default. */
struct dns_stub_config {
	const char *listen_address; /* IPv4 or IPv6 literal */
	uint16_t listen_port;	    /* 0 in tests means: DNS_STUB_DEFAULT_PORT; see below */
	int listen_port_any;	    /* 1: bind port 0 and let the kernel pick (tests) */
	/*
	 * Upstream resolvers as "ADDR[:PORT],..." ("[v6]:port" for IPv6 with a port).
	 * NULL: the system's, from /etc/resolv.conf, minus our own listen address.
	 */
	const char *upstreams;
	const char *synthetic_v4;   /* NULL: SYNTHETIC_DEFAULT_V4 */
	const char *synthetic_v6;   /* NULL: SYNTHETIC_DEFAULT_V6; "off": no IPv6 answers */
	size_t synthetic_max_entries;
	uint32_t answer_ttl;
	unsigned upstream_timeout_ms;
	unsigned upstream_tries;
	unsigned deadline_ms;
	size_t max_pending;
	size_t max_tcp_clients;
	/* Where the stub registers its metrics; NULL: kept but not exported. */
	struct sp_metrics_registry *metrics;
};

/*
 * Creates the stub: validates the config, binds the UDP and TCP sockets, sets up the
 * upstream channels, and starts serving when the base runs. The resource set starts
 * empty (everything is forwarded) until dns_stub_set_resources. SP_ERR_INVALID for a
 * bad config (diag names the setting), SP_ERR_IO when a socket cannot be bound (diag has
 * errno's text), SP_ERR_NOT_FOUND when no upstream is left, SP_ERR_NOMEM.
 */
int dns_stub_new(struct event_base *base, const struct dns_stub_config *cfg,
		 struct dns_stub **out, struct sp_diag *diag);

/* Stops serving and frees everything. Safe on NULL. */
void dns_stub_free(struct dns_stub *stub);

/*
 * Replaces the resource set (copied; the caller keeps its array). Synthetic addresses
 * of names already mapped stay the same. On failure the old set stays in force.
 */
int dns_stub_set_resources(struct dns_stub *stub, const struct sp_resource *resources,
			   size_t count, struct sp_diag *diag);

/* The port the stub listens on (the kernel's pick with listen_port_any). */
uint16_t dns_stub_port(const struct dns_stub *stub);

/* The synthetic table, for the interception layer's reverse lookups. */
struct synthetic *dns_stub_synthetic(struct dns_stub *stub);

/* What the stub does with one query. */
enum dns_stub_action {
	DNS_STUB_DROP = 0,  /* send nothing */
	DNS_STUB_REPLY,	    /* send the reply written to `out` */
	DNS_STUB_FORWARD,   /* forward the query upstream */
};

/* Counts dns_stub_decide adds to, one call at a time. */
struct dns_stub_decision {
	enum dns_stub_action action;
	int protected_name; /* the name matched a resource */
	int malformed;	    /* the verdict was not ANSWER */
};

/*
 * The pure core: parses `msg` (len bytes, received over TCP when over_tcp) into *q and
 * decides. For REPLY the reply is appended to `out`, within q->reply_limit and the room
 * in out. `index` may be NULL (no protected names). Never fails: a reply that cannot be
 * built becomes SERVFAIL, or DROP when even that does not fit.
 */
struct dns_stub_decision dns_stub_decide(const struct sp_resource_index *index,
					 struct synthetic *synthetic, uint32_t ttl,
					 const uint8_t *msg, size_t len, int over_tcp,
					 struct sp_dns_query *q, struct sp_buf *out);

/*
 * An upstream reply that carries an address of a protected name: an unprotected name
 * that is a CNAME of a protected one, resolved by the upstream to the internal address.
 */
struct dns_stub_leak {
	int section;		     /* 1 answer, 2 authority, 3 additional */
	uint16_t rrtype;	     /* A or AAAA */
	struct sp_dns_name owner;    /* the protected name that owns the record */
	const struct sp_resource *resource;
};

/*
 * Walks every record of an upstream reply (names through shared/dns.h, the fixed
 * fields through sp_reader) and looks for an A or AAAA record owned by a protected
 * name. Returns 0 when there is none, 1 with *leak filled for the first one, or
 * SP_ERR_TRUNCATED / SP_ERR_INVALID when the reply cannot be walked (the stub then
 * sends SERVFAIL rather than relay what it could not check). `index` may be NULL (0).
 */
int dns_stub_scan_upstream(const struct sp_resource_index *index, const uint8_t *msg,
			   size_t len, struct dns_stub_leak *leak);

#endif
