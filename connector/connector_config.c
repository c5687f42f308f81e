/*
 * connector/connector_config.c — parsing a verified config document into the data
 * plane's lookup structures. Pure: no I/O, the clock is passed in.
 */
#include "connector/connector_config.h"

#include <stdlib.h>
#include <string.h>

#include "shared/token.h"

#define CONFIG_SKEW_S 60

static int id_valid(const char *s)
{
	size_t n = strlen(s);
	return n >= 1 && n <= CONNECTOR_ID_MAX;
}

static int compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void id_set_free(struct connector_id_set *set)
{
	for (size_t i = 0; i < set->count; i++)
		free(set->ids[i]);
	free(set->ids);
	set->ids = NULL;
	set->count = 0;
}

static int id_set_from_json(const json_t *array, const char *field, struct connector_id_set *out,
			    struct sp_diag *diag)
{
	if (!json_is_array(array))
		return sp_diag_set(diag, SP_ERR_INVALID, "revocations.%s must be an array", field);
	size_t n = json_array_size(array);
	if (n == 0)
		return 0;
	out->ids = calloc(n, sizeof(*out->ids));
	if (out->ids == NULL)
		return SP_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(array, i));
		if (s == NULL || !id_valid(s))
			return sp_diag_set(diag, SP_ERR_INVALID, "revocations.%s[%zu] is not an id",
					   field, i);
		out->ids[i] = strdup(s);
		if (out->ids[i] == NULL)
			return SP_ERR_NOMEM;
		out->count++;
	}
	qsort(out->ids, out->count, sizeof(*out->ids), compare_strings);
	return 0;
}

int connector_id_set_contains(const struct connector_id_set *set, const char *id)
{
	if (set == NULL || id == NULL || set->count == 0)
		return 0;
	return bsearch(&id, set->ids, set->count, sizeof(*set->ids), compare_strings) != NULL;
}

static int compare_access(const void *a, const void *b)
{
	const struct connector_access_revocation *x = a, *y = b;
	int c = strcmp(x->user, y->user);
	return c != 0 ? c : strcmp(x->resource, y->resource);
}

/* revocations.access: absent (older controllers) or an array of {user, resource, at}. */
static int access_from_json(const json_t *array, struct connector_config *cfg,
			    struct sp_diag *diag)
{
	if (array == NULL)
		return 0;
	if (!json_is_array(array))
		return sp_diag_set(diag, SP_ERR_INVALID, "revocations.access must be an array");
	size_t n = json_array_size(array);
	if (n > CONNECTOR_ACCESS_REVOCATIONS_MAX)
		return sp_diag_set(diag, SP_ERR_INVALID, "revocations.access has %zu entries, over "
				   "%d", n, CONNECTOR_ACCESS_REVOCATIONS_MAX);
	if (n == 0)
		return 0;
	cfg->access = calloc(n, sizeof(*cfg->access));
	if (cfg->access == NULL)
		return SP_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const json_t *e = json_array_get(array, i);
		const char *user = json_string_value(json_object_get(e, "user"));
		const char *res = json_string_value(json_object_get(e, "resource"));
		const json_t *at = json_object_get(e, "at");
		if (!json_is_object(e) || json_object_size(e) != 3 || user == NULL ||
		    res == NULL || !id_valid(user) || !id_valid(res) || !json_is_integer(at) ||
		    json_integer_value(at) < 0)
			return sp_diag_set(diag, SP_ERR_INVALID, "revocations.access[%zu] must be "
					   "{\"user\", \"resource\", \"at\"}", i);
		struct connector_access_revocation *a = &cfg->access[i];
		memcpy(a->user, user, strlen(user) + 1);
		memcpy(a->resource, res, strlen(res) + 1);
		a->at = json_integer_value(at);
	}
	qsort(cfg->access, n, sizeof(*cfg->access), compare_access);
	/* Duplicates keep the latest time: fold them so bsearch finds that one. */
	size_t kept = 0;
	for (size_t i = 0; i < n; i++) {
		if (kept > 0 && compare_access(&cfg->access[kept - 1], &cfg->access[i]) == 0) {
			if (cfg->access[i].at > cfg->access[kept - 1].at)
				cfg->access[kept - 1].at = cfg->access[i].at;
			continue;
		}
		cfg->access[kept++] = cfg->access[i];
	}
	cfg->access_count = kept;
	return 0;
}

static int64_t access_find(const struct connector_config *cfg, const char *user,
			   const char *resource)
{
	if (strlen(user) > CONNECTOR_ID_MAX || strlen(resource) > CONNECTOR_ID_MAX)
		return -1;
	struct connector_access_revocation key;
	memset(&key, 0, sizeof(key));
	memcpy(key.user, user, strlen(user) + 1);
	memcpy(key.resource, resource, strlen(resource) + 1);
	const struct connector_access_revocation *hit =
		bsearch(&key, cfg->access, cfg->access_count, sizeof(*cfg->access), compare_access);
	return hit != NULL ? hit->at : -1;
}

int64_t connector_access_revoked_at(const struct connector_config *cfg, const char *user,
				    const char *resource)
{
	if (cfg == NULL || user == NULL || resource == NULL || cfg->access_count == 0)
		return -1;
	int64_t at = access_find(cfg, user, resource);
	int64_t any_resource = access_find(cfg, user, CONNECTOR_ACCESS_ANY);
	int64_t everyone = access_find(cfg, CONNECTOR_ACCESS_ANY, CONNECTOR_ACCESS_ANY);
	if (any_resource > at)
		at = any_resource;
	if (everyone > at)
		at = everyone;
	return at;
}

static int compare_resources(const void *a, const void *b)
{
	return strcmp(((const struct connector_resource *)a)->id,
		      ((const struct connector_resource *)b)->id);
}

const struct connector_resource *connector_config_find_resource(const struct connector_config *cfg,
								 const char *id)
{
	if (cfg == NULL || id == NULL || cfg->resource_count == 0 || strlen(id) > CONNECTOR_ID_MAX)
		return NULL;
	struct connector_resource key;
	memset(&key, 0, sizeof(key));
	memcpy(key.id, id, strlen(id) + 1);
	return bsearch(&key, cfg->resources, cfg->resource_count, sizeof(*cfg->resources),
		       compare_resources);
}

int connector_jwks_copy(const struct sp_jwks *from, struct sp_jwks *to)
{
	sp_jwks_init(to);
	if (from == NULL || from->count == 0)
		return 0;
	char *text = NULL;
	size_t len = 0;
	int r = sp_jwks_serialize(from, &text, &len);
	if (r < 0)
		return r;
	r = sp_jwks_parse(text, len, to, NULL);
	free(text);
	return r;
}

static int resources_from_json(const json_t *array, struct connector_config *cfg,
			       struct sp_diag *diag)
{
	if (!json_is_array(array))
		return sp_diag_set(diag, SP_ERR_INVALID, "resources must be an array");
	size_t n = json_array_size(array);
	if (n > SP_RESOURCE_MAX_COUNT)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "resources: too many");
	if (n == 0)
		return 0;
	cfg->resources = calloc(n, sizeof(*cfg->resources));
	if (cfg->resources == NULL)
		return SP_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		const json_t *item = json_array_get(array, i);
		const char *id = json_string_value(json_object_get(item, "id"));
		if (!json_is_object(item) || id == NULL || !id_valid(id))
			return sp_diag_set(diag, SP_ERR_INVALID, "resources[%zu].id is not an id", i);
		/* The controller's ids are strings; shared/resource.h numbers them, so the
		 * string stays beside the parsed resource and the copy parsed has no id. */
		json_t *copy = json_deep_copy(item);
		if (copy == NULL)
			return SP_ERR_NOMEM;
		json_object_del(copy, "id");
		struct sp_diag d = {{0}};
		int r = sp_resource_from_json(copy, &cfg->resources[i].resource, &d);
		json_decref(copy);
		if (r < 0)
			return sp_diag_set(diag, r, "resources[%zu]: %s", i, d.message);
		memcpy(cfg->resources[i].id, id, strlen(id) + 1);
		cfg->resource_count++;
	}
	qsort(cfg->resources, cfg->resource_count, sizeof(*cfg->resources), compare_resources);
	return 0;
}

int connector_config_from_claims(const json_t *claims, const char *connector_id,
				 const char *expected_network, const struct sp_jwks *keys,
				 int64_t now, struct connector_config **out, struct sp_diag *diag)
{
	*out = NULL;
	int r = SP_ERR_NOMEM;
	struct connector_config *cfg = calloc(1, sizeof(*cfg));
	if (cfg == NULL)
		return SP_ERR_NOMEM;
	sp_jwks_init(&cfg->keys);

	r = SP_ERR_INVALID;
	json_t *v = json_object_get(claims, "v");
	const char *typ = json_string_value(json_object_get(claims, "typ"));
	const char *iss = json_string_value(json_object_get(claims, "iss"));
	const char *aud = json_string_value(json_object_get(claims, "aud"));
	const char *net = json_string_value(json_object_get(claims, "network_id"));
	json_t *exp = json_object_get(claims, "exp");
	json_t *seq = json_object_get(claims, "seq");
	json_t *rev = json_object_get(claims, "revocations");
	if (!json_is_integer(v) || json_integer_value(v) != 1 || typ == NULL ||
	    strcmp(typ, "connector-config") != 0) {
		sp_diag_set(diag, r, "config: v must be 1 and typ \"connector-config\"");
		goto out;
	}
	if (iss == NULL || strlen(iss) >= sizeof(cfg->issuer) || aud == NULL || net == NULL ||
	    !id_valid(net) || !json_is_integer(exp) || !json_is_integer(seq) ||
	    !json_is_object(rev)) {
		sp_diag_set(diag, r, "config: iss, aud, exp, network_id, seq or revocations missing");
		goto out;
	}
	char want_aud[CONNECTOR_ID_MAX + 32];
	snprintf(want_aud, sizeof(want_aud), "sallyport:connector:%s", connector_id);
	if (strcmp(aud, want_aud) != 0) {
		r = sp_diag_set(diag, SP_ERR_AUDIENCE, "config: aud \"%s\" is not ours", aud);
		goto out;
	}
	if (now > json_integer_value(exp) + CONFIG_SKEW_S) {
		r = sp_diag_set(diag, SP_ERR_EXPIRED, "config: expired at %lld",
				(long long)json_integer_value(exp));
		goto out;
	}
	if (expected_network != NULL && strcmp(net, expected_network) != 0) {
		sp_diag_set(diag, r, "config: network_id %s is not the enrolled network %s", net,
			    expected_network);
		goto out;
	}
	memcpy(cfg->issuer, iss, strlen(iss) + 1);
	memcpy(cfg->network_id, net, strlen(net) + 1);
	cfg->seq = json_integer_value(seq);
	json_t *iat = json_object_get(claims, "iat");
	cfg->issued_at = json_is_integer(iat) ? json_integer_value(iat) : 0;
	cfg->expires_at = json_integer_value(exp);
	r = resources_from_json(json_object_get(claims, "resources"), cfg, diag);
	if (r < 0)
		goto out;
	r = id_set_from_json(json_object_get(rev, "sessions"), "sessions", &cfg->revoked_sessions,
			     diag);
	if (r == 0)
		r = id_set_from_json(json_object_get(rev, "devices"), "devices",
				     &cfg->revoked_devices, diag);
	if (r == 0)
		r = id_set_from_json(json_object_get(rev, "users"), "users", &cfg->revoked_users,
				     diag);
	if (r == 0)
		r = access_from_json(json_object_get(rev, "access"), cfg, diag);
	if (r < 0)
		goto out;
	r = connector_jwks_copy(keys, &cfg->keys);
	if (r < 0)
		goto out;
	*out = cfg;
	cfg = NULL;
	r = 0;
out:
	connector_config_free(cfg);
	return r;
}

int connector_config_is_older(int64_t cur_seq, int64_t cur_iat,
			      const struct connector_config *next)
{
	if (cur_seq < 0 || next == NULL)
		return 0;
	return next->seq < cur_seq && next->issued_at <= cur_iat;
}

void connector_config_free(struct connector_config *cfg)
{
	if (cfg == NULL)
		return;
	for (size_t i = 0; i < cfg->resource_count; i++)
		sp_resource_free(&cfg->resources[i].resource);
	free(cfg->resources);
	id_set_free(&cfg->revoked_sessions);
	id_set_free(&cfg->revoked_devices);
	id_set_free(&cfg->revoked_users);
	free(cfg->access);
	sp_jwks_free(&cfg->keys);
	free(cfg);
}
