/*
 * connector/authorize.c — the per-stream decision (see authorize.h). Pure.
 */
#include "connector/authorize.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/sha.h>

#include "shared/portset.h"
#include "shared/resource_name.h"
#include "shared/token.h"

/* The sixteen claims of a grant (docs/protocol.md §1.1). */
static const char *const grant_claim_names[] = {"v",   "typ", "iss", "aud", "jti", "iat",
						"exp", "sub", "sid", "dev", "cnf", "res",
						"net", "dst", "tcp", "udp"};
#define GRANT_CLAIM_COUNT (sizeof(grant_claim_names) / sizeof(grant_claim_names[0]))

static int deny(struct connector_decision *out, enum sp_tunnel_reason reason, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int deny(struct connector_decision *out, enum sp_tunnel_reason reason, const char *fmt, ...)
{
	out->reason = reason;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(out->detail, sizeof(out->detail), fmt, ap);
	va_end(ap);
	return 0;
}

static int copy_id(char dst[CONNECTOR_ID_MAX + 1], const char *src)
{
	if (src == NULL || strlen(src) == 0 || strlen(src) > CONNECTOR_ID_MAX)
		return -1;
	memcpy(dst, src, strlen(src) + 1);
	return 0;
}

/* Splits "host:port" / "[v6]:port" (already checked by the tunnel) into out. */
static int split_authority(const char *authority, struct connector_decision *out)
{
	const char *colon = strrchr(authority, ':');
	if (colon == NULL || colon == authority)
		return -1;
	const char *host = authority;
	size_t host_len = (size_t)(colon - authority);
	if (host[0] == '[') {
		if (host_len < 3 || host[host_len - 1] != ']')
			return -1;
		host++;
		host_len -= 2;
	}
	if (host_len == 0 || host_len >= sizeof(out->host))
		return -1;
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';
	unsigned long port = 0;
	for (const char *p = colon + 1; *p != '\0'; p++) {
		if (*p < '0' || *p > '9' || port > 65535)
			return -1;
		port = port * 10 + (unsigned long)(*p - '0');
	}
	if (port == 0 || port > 65535)
		return -1;
	out->port = (uint16_t)port;
	if (sp_cidr_parse_address(out->host, &out->host_family, out->host_addr, NULL) == 0)
		out->host_is_ip = 1;
	return 0;
}

/* 1 when the requested destination lies inside the resource's address. */
static int destination_matches(const struct sp_resource *res, const struct connector_decision *d,
			       const char *normalized, size_t normalized_len)
{
	if (d->host_is_ip)
		return sp_resource_address_allows_ip(res, d->host_family, d->host_addr);
	return sp_resource_matches_name(res, normalized, normalized_len);
}

static int ports_allowed(const json_t *grant_ports, const char *field,
			 const struct sp_resource *res, int protocol, uint16_t port, int *allowed)
{
	*allowed = 0;
	struct sp_portset set;
	memset(&set, 0, sizeof(set));
	int r = sp_portset_from_json(grant_ports, field, &set, NULL);
	if (r < 0)
		return r;
	*allowed = sp_portset_contains(&set, port) && sp_resource_allows(res, protocol, port);
	sp_portset_free(&set);
	return 0;
}

void connector_grant_cache_clear(struct connector_grant_cache *cache)
{
	if (cache == NULL)
		return;
	for (size_t i = 0; i < CONNECTOR_GRANT_CACHE_SLOTS; i++) {
		json_decref(cache->slot[i].claims);
		cache->slot[i].claims = NULL;
	}
	cache->cfg = NULL;
	cache->cfg_seq = 0;
}

/* The grant's verified claims (a new reference) from the cache, or verifies it there. */
static int verify_grant(const struct connector_config *cfg, struct connector_grant_cache *cache,
			const char *grant, json_t **claims, struct sp_diag *d)
{
	size_t len = strlen(grant);
	if (cache == NULL)
		return sp_token_verify(grant, len, &cfg->keys, "ES256", claims, d);
	if (cache->cfg != cfg || cache->cfg_seq != cfg->seq) {
		connector_grant_cache_clear(cache);
		cache->cfg = cfg;
		cache->cfg_seq = cfg->seq;
	}
	uint8_t digest[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)grant, len, digest);
	size_t at = (((size_t)digest[0] << 8) | digest[1]) % CONNECTOR_GRANT_CACHE_SLOTS;
	if (cache->slot[at].claims != NULL &&
	    memcmp(cache->slot[at].digest, digest, sizeof(digest)) == 0) {
		cache->hits++;
		*claims = json_incref(cache->slot[at].claims);
		return 0;
	}
	cache->misses++;
	int r = sp_token_verify(grant, len, &cfg->keys, "ES256", claims, d);
	if (r < 0)
		return r;
	json_decref(cache->slot[at].claims);
	cache->slot[at].claims = json_incref(*claims);
	memcpy(cache->slot[at].digest, digest, sizeof(digest));
	return 0;
}

int connector_authorize(const struct connector_config *cfg, const char *peer_jkt,
			const struct sp_tunnel_open_request *req, int64_t now,
			struct connector_decision *out)
{
	return connector_authorize_cached(cfg, NULL, peer_jkt, req, now, out);
}

int connector_authorize_cached(const struct connector_config *cfg,
			       struct connector_grant_cache *cache, const char *peer_jkt,
			       const struct sp_tunnel_open_request *req, int64_t now,
			       struct connector_decision *out)
{
	if (out == NULL)
		return SP_ERR_INVALID;
	memset(out, 0, sizeof(*out));
	if (cfg == NULL || peer_jkt == NULL || req == NULL || req->grant == NULL ||
	    req->authority == NULL)
		return SP_ERR_INVALID;
	int r = 0;
	json_t *claims = NULL;
	struct sp_resource dst;
	memset(&dst, 0, sizeof(dst));

	if (split_authority(req->authority, out) < 0) {
		r = deny(out, SP_TUNNEL_REASON_BAD_REQUEST, "authority \"%s\" is malformed",
			 req->authority);
		goto out;
	}

	/* 1. The signature, with the controller keys of our own signed config. */
	struct sp_diag d = {{0}};
	r = verify_grant(cfg, cache, req->grant, &claims, &d);
	if (r == SP_ERR_NOMEM)
		goto out;
	if (r < 0) {
		r = deny(out, SP_TUNNEL_REASON_BAD_GRANT, "grant: %s", d.message);
		goto out;
	}

	/* 2. The claim set: exactly the sixteen claims, of the right types. */
	const char *typ = json_string_value(json_object_get(claims, "typ"));
	json_t *v = json_object_get(claims, "v");
	if (json_object_size(claims) != GRANT_CLAIM_COUNT || !json_is_integer(v) ||
	    json_integer_value(v) != 1 || typ == NULL || strcmp(typ, "grant") != 0) {
		r = deny(out, SP_TUNNEL_REASON_BAD_GRANT, "grant: not a v1 grant claim set");
		goto out;
	}
	for (size_t i = 0; i < GRANT_CLAIM_COUNT; i++) {
		if (json_object_get(claims, grant_claim_names[i]) == NULL) {
			r = deny(out, SP_TUNNEL_REASON_BAD_GRANT, "grant: claim %s missing",
				 grant_claim_names[i]);
			goto out;
		}
	}
	const char *sub = json_string_value(json_object_get(claims, "sub"));
	const char *sid = json_string_value(json_object_get(claims, "sid"));
	const char *dev = json_string_value(json_object_get(claims, "dev"));
	const char *res_id = json_string_value(json_object_get(claims, "res"));
	const char *net = json_string_value(json_object_get(claims, "net"));
	const char *dst_text = json_string_value(json_object_get(claims, "dst"));
	if (copy_id(out->user_id, sub) < 0 || copy_id(out->session_id, sid) < 0 ||
	    copy_id(out->device_id, dev) < 0 || copy_id(out->resource_id, res_id) < 0 ||
	    net == NULL || dst_text == NULL) {
		r = deny(out, SP_TUNNEL_REASON_BAD_GRANT, "grant: sub, sid, dev, res, net or dst is "
			 "not a string id");
		goto out;
	}
	out->grant_expires_at = json_integer_value(json_object_get(claims, "exp"));
	out->grant_issued_at = json_integer_value(json_object_get(claims, "iat"));

	/* 3. Issuer, audience (our network), times and key binding. */
	char audience[CONNECTOR_ID_MAX + 32];
	snprintf(audience, sizeof(audience), "sallyport:network:%s", cfg->network_id);
	struct sp_token_expect expect = {
		.issuer = cfg->issuer,
		.audience = audience,
		.now = now,
		.max_skew_s = CONNECTOR_GRANT_SKEW_S,
		.jkt = peer_jkt,
		.require_exp = 1,
	};
	memset(&d, 0, sizeof(d));
	r = sp_token_check_claims(claims, &expect, &d);
	if (r == SP_ERR_EXPIRED) {
		r = deny(out, SP_TUNNEL_REASON_EXPIRED, "grant: %s", d.message);
		goto out;
	}
	if (r < 0) {
		r = deny(out, SP_TUNNEL_REASON_BAD_GRANT, "grant: %s", d.message);
		goto out;
	}
	if (strcmp(net, cfg->network_id) != 0) {
		r = deny(out, SP_TUNNEL_REASON_BAD_GRANT, "grant: net %s is not our network", net);
		goto out;
	}

	/* 4. Revocations pushed by the controller. */
	if (connector_id_set_contains(&cfg->revoked_users, sub)) {
		r = deny(out, SP_TUNNEL_REASON_REVOKED, "user %s is disabled", sub);
		goto out;
	}
	if (connector_id_set_contains(&cfg->revoked_devices, dev)) {
		r = deny(out, SP_TUNNEL_REASON_REVOKED, "device %s is blocked", dev);
		goto out;
	}
	if (connector_id_set_contains(&cfg->revoked_sessions, sid)) {
		r = deny(out, SP_TUNNEL_REASON_REVOKED, "session %s is revoked", sid);
		goto out;
	}
	int64_t ended = connector_access_revoked_at(cfg, sub, res_id);
	if (ended >= 0 && out->grant_issued_at <= ended) {
		r = deny(out, SP_TUNNEL_REASON_REVOKED, "access of user %s to resource %s ended at "
			 "%lld, after the grant was issued", sub, res_id, (long long)ended);
		goto out;
	}

	/* 5. The destination: inside the grant's dst AND our own copy of the resource. */
	const struct connector_resource *own = connector_config_find_resource(cfg, res_id);
	if (own == NULL) {
		r = deny(out, SP_TUNNEL_REASON_NO_POLICY, "resource %s is not in our config",
			 res_id);
		goto out;
	}
	memset(&d, 0, sizeof(d));
	if (sp_resource_address_parse(dst_text, &dst.address, &d) < 0) {
		r = deny(out, SP_TUNNEL_REASON_BAD_GRANT, "grant: dst: %s", d.message);
		goto out;
	}
	char normalized[SP_RESOURCE_NAME_BUF];
	size_t normalized_len = 0;
	if (!out->host_is_ip &&
	    sp_resource_name_normalize(out->host, normalized, &normalized_len, NULL) < 0) {
		r = deny(out, SP_TUNNEL_REASON_BAD_REQUEST, "host \"%s\" is not a valid name",
			 out->host);
		goto out;
	}
	if (!destination_matches(&dst, out, normalized, normalized_len) ||
	    !destination_matches(&own->resource, out, normalized, normalized_len)) {
		r = deny(out, SP_TUNNEL_REASON_NO_POLICY, "destination %s is outside the resource",
			 out->host);
		goto out;
	}

	/* 6. Port and protocol, allowed by both the grant and our resource. */
	int tcp = req->proto == SP_TUNNEL_PROTO_TCP;
	int allowed = 0;
	r = ports_allowed(json_object_get(claims, tcp ? "tcp" : "udp"), tcp ? "tcp" : "udp",
			  &own->resource, tcp ? SP_RESOURCE_PROTOCOL_TCP : SP_RESOURCE_PROTOCOL_UDP,
			  out->port, &allowed);
	if (r == SP_ERR_NOMEM)
		goto out;
	if (r < 0) {
		r = deny(out, SP_TUNNEL_REASON_BAD_GRANT, "grant: bad port spec");
		goto out;
	}
	if (!allowed) {
		r = deny(out, SP_TUNNEL_REASON_PORT_NOT_ALLOWED, "port not allowed for %s",
			 tcp ? "tcp" : "udp");
		goto out;
	}
	out->resource = own;
	out->reason = SP_TUNNEL_REASON_NONE;
	r = 0;
out:
	sp_resource_address_free(&dst.address);
	json_decref(claims);
	return r;
}

static int address_is_special(int family, const uint8_t *a)
{
	if (family == AF_INET) {
		return a[0] == 127 || a[0] == 0 || (a[0] == 169 && a[1] == 254) ||
		       (a[0] >= 224 && a[0] <= 239);
	}
	static const uint8_t zero[16];
	if (memcmp(a, zero, 15) == 0 && (a[15] == 0 || a[15] == 1))
		return 1; /* :: and ::1 */
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)
		return 1; /* fe80::/10 */
	return a[0] == 0xff; /* multicast */
}

int connector_address_allowed(const struct sp_resource *res, int family, const uint8_t *addr)
{
	if (res == NULL || addr == NULL)
		return 0;
	int nf = 0;
	uint8_t norm[16];
	if (sp_cidr_normalize(family, addr, &nf, norm) < 0)
		return 0;
	if (res->address.kind == SP_RESOURCE_ADDRESS_CIDR)
		return sp_resource_address_allows_ip(res, nf, norm);
	return !address_is_special(nf, norm);
}
