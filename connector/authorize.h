/*
 * connector/authorize.h — the connector's decision about one stream (docs/protocol.md
 * §1.1, last paragraph; docs/connector.md). Pure: no I/O, the clock is passed in.
 *
 * connector_authorize verifies the grant's signature with the controller keys of the
 * connector's own config, then checks audience, times, key binding, revocations, that
 * the destination matches both the grant's `dst` and the resource `res` of the config,
 * and that port and protocol are allowed by both. The address check after DNS
 * (connector_address_allowed) is separate because names resolve later, asynchronously.
 */
#ifndef SALLYPORT_CONNECTOR_AUTHORIZE_H
#define SALLYPORT_CONNECTOR_AUTHORIZE_H

#include <stdint.h>

#include <jansson.h>

#include "connector/connector_config.h"
#include "shared/cidr.h"
#include "shared/tunnel.h"

/* Clock skew allowed on a grant's exp and iat. */
#define CONNECTOR_GRANT_SKEW_S 60

/*
 * The outcome. Filled by connector_authorize (zeroed first). The ids are copied from
 * the grant when it verified, so a denial's flow event can name who asked. `resource`
 * points into the config passed in and is valid only while that config lives.
 */
struct connector_decision {
	enum sp_tunnel_reason reason; /* NONE: allowed */
	char detail[160];	      /* for the log: why, naming the claim or field */
	char user_id[CONNECTOR_ID_MAX + 1];
	char device_id[CONNECTOR_ID_MAX + 1];
	char session_id[CONNECTOR_ID_MAX + 1];
	char resource_id[CONNECTOR_ID_MAX + 1];
	char host[SP_TUNNEL_AUTHORITY_MAX + 1]; /* requested host, brackets removed */
	uint16_t port;
	int host_is_ip;	      /* the host is an IP literal (host_family/host_addr set) */
	int host_family;      /* AF_INET or AF_INET6 */
	uint8_t host_addr[16];
	int64_t grant_expires_at;
	int64_t grant_issued_at; /* iat: compared with access revocations (cut on a new config) */
	const struct connector_resource *resource;
};

/*
 * Decides whether the stream `req`, arriving on a tunnel whose peer key has the RFC 7638
 * thumbprint peer_jkt, may be opened. Returns 0 and fills *out in every case where a
 * decision was made (out->reason NONE = allowed, else bad_grant, expired, revoked,
 * no_policy, port_not_allowed, bad_request), or SP_ERR_NOMEM / SP_ERR_INVALID (NULL
 * arguments).
 */
int connector_authorize(const struct connector_config *cfg, const char *peer_jkt,
			const struct sp_tunnel_open_request *req, int64_t now,
			struct connector_decision *out);

/*
 * Grants whose signature verified, keyed by the SHA-256 of the grant text, for one config
 * (the pointer and its seq: a new config, which may carry other controller keys, empties
 * it). Only the signature check and the claim parsing are skipped on a hit; every claim
 * check (times, key binding, revocations, destination, ports) runs on every stream. A
 * client opening many flows with one grant then costs one ECDSA verification, not one per
 * flow. Direct-mapped, CONNECTOR_GRANT_CACHE_SLOTS entries. Owned by the caller: zero it
 * to start, connector_grant_cache_clear to free the entries (safe on NULL).
 */
#define CONNECTOR_GRANT_CACHE_SLOTS 256
struct connector_grant_cache {
	const struct connector_config *cfg;
	int64_t cfg_seq;
	struct {
		uint8_t digest[32];
		json_t *claims; /* NULL: empty slot */
	} slot[CONNECTOR_GRANT_CACHE_SLOTS];
	uint64_t hits, misses;
};
void connector_grant_cache_clear(struct connector_grant_cache *cache);

/* connector_authorize with a verified-grant cache (NULL: none). Same results. */
int connector_authorize_cached(const struct connector_config *cfg,
			       struct connector_grant_cache *cache, const char *peer_jkt,
			       const struct sp_tunnel_open_request *req, int64_t now,
			       struct connector_decision *out);

/*
 * The DNS-rebinding and CIDR-escape rule for one address the connector is about to dial
 * (a resolved answer or the requested IP literal):
 *   - an IP/CIDR resource allows exactly the addresses inside its block;
 *   - a name or pattern resource allows any address except loopback (127/8, ::1),
 *     link-local (169.254/16, fe80::/10), unspecified (0.0.0.0/8, ::) and multicast
 *     (224/4, ff00::/8), because a name inside the private network must not be made to
 *     point the connector at itself or at link-local metadata services. An operator who
 *     means such an address makes it an IP resource.
 * IPv4-mapped IPv6 is folded to IPv4 first. Returns 1 when allowed.
 */
int connector_address_allowed(const struct sp_resource *res, int family, const uint8_t *addr);

#endif
