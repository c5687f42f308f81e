/* shared/resource.c — see resource.h. */
#include "shared/resource.h"

#include <stdlib.h>
#include <string.h>

/* How much of a bad key the diag echoes. */
#define RESOURCE_ECHO_MAX 40

static void resource_echo(const char *text, char out[RESOURCE_ECHO_MAX + 4])
{
	size_t n = 0;
	for (; n < RESOURCE_ECHO_MAX && text[n] != '\0'; n++) {
		unsigned char c = (unsigned char)text[n];
		out[n] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
	}
	if (text[n] != '\0') {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

static char *resource_strndup(const char *s, size_t len)
{
	char *copy = malloc(len + 1);
	if (copy != NULL) {
		memcpy(copy, s, len);
		copy[len] = '\0';
	}
	return copy;
}

/* Which kind of address a text is, by the characters it holds. */
static enum sp_resource_address_kind resource_address_kind(const char *text)
{
	bool digits_and_dots = true, wildcard = false;
	for (const char *p = text; *p != '\0'; p++) {
		if (*p == ':' || *p == '/')
			return SP_RESOURCE_ADDRESS_CIDR;
		if (*p == '*' || *p == '?')
			wildcard = true;
		if (*p != '.' && (*p < '0' || *p > '9'))
			digits_and_dots = false;
	}
	if (digits_and_dots && *text != '\0')
		return SP_RESOURCE_ADDRESS_CIDR;
	return wildcard ? SP_RESOURCE_ADDRESS_PATTERN : SP_RESOURCE_ADDRESS_NAME;
}

int sp_resource_address_parse(const char *text, struct sp_resource_address *out,
			      struct sp_diag *diag)
{
	char normal[SP_RESOURCE_NAME_BUF];
	size_t len = 0;
	int r;

	memset(out, 0, sizeof(*out));
	if (text == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "address is missing");
	/* Longer than any name or CIDR: refuse before scanning it. */
	if (strnlen(text, SP_RESOURCE_NAME_MAX + 2) > SP_RESOURCE_NAME_MAX + 1)
		return sp_diag_set(diag, SP_ERR_INVALID, "address is longer than %d characters",
				   SP_RESOURCE_NAME_MAX);
	enum sp_resource_address_kind kind = resource_address_kind(text);
	switch (kind) {
	case SP_RESOURCE_ADDRESS_CIDR:
		r = sp_cidr_parse(text, &out->cidr, diag);
		if (r < 0)
			goto fail;
		out->kind = kind;
		return 0;
	case SP_RESOURCE_ADDRESS_PATTERN:
		r = sp_resource_name_parse_pattern(text, normal, &len, &out->specificity, diag);
		break;
	default:
		r = sp_resource_name_normalize(text, normal, &len, diag);
		break;
	}
	if (r < 0)
		goto fail;
	out->name = resource_strndup(normal, len);
	if (out->name == NULL) {
		r = SP_ERR_NOMEM;
		goto fail;
	}
	out->name_len = len;
	out->kind = kind;
	return 0;
fail:
	memset(out, 0, sizeof(*out));
	return r;
}

void sp_resource_address_free(struct sp_resource_address *address)
{
	if (address == NULL)
		return;
	free(address->name);
	memset(address, 0, sizeof(*address));
}

int sp_resource_address_format(const struct sp_resource_address *address, char *out, size_t out_len)
{
	if (out_len > 0)
		out[0] = '\0';
	switch (address->kind) {
	case SP_RESOURCE_ADDRESS_CIDR:
		return sp_cidr_format(&address->cidr, out, out_len);
	case SP_RESOURCE_ADDRESS_NAME:
	case SP_RESOURCE_ADDRESS_PATTERN:
		if (address->name_len >= out_len)
			return SP_ERR_TOO_LARGE;
		memcpy(out, address->name, address->name_len + 1);
		return 0;
	default:
		return SP_ERR_INVALID;
	}
}

/* The fields a resource object may hold. */
static const char *const resource_fields[] = {"id",    "network_id", "name", "address",
					      "alias", "tcp",	     "udp",  "icmp"};

/* A JSON string without NUL bytes, or an error naming the field. */
static int resource_json_string(const json_t *value, const char *field, const char **out,
				struct sp_diag *diag)
{
	*out = NULL;
	if (!json_is_string(value))
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" must be a string", field);
	const char *s = json_string_value(value);
	if (strlen(s) != json_string_length(value))
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" holds a NUL character",
				   field);
	*out = s;
	return 0;
}

static int resource_json_id(const json_t *value, const char *field, int64_t *out,
			    struct sp_diag *diag)
{
	*out = 0;
	if (value == NULL)
		return 0;
	if (!json_is_integer(value))
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" must be an integer", field);
	json_int_t v = json_integer_value(value);
	if (v < 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"%s\" must not be negative",
				   field);
	*out = (int64_t)v;
	return 0;
}

static int resource_json_ports(const json_t *value, const char *field, struct sp_portset *out,
			       struct sp_diag *diag)
{
	if (value == NULL) {
		memset(out, 0, sizeof(*out));
		return sp_portset_parse("all", out, diag);
	}
	return sp_portset_from_json(value, field, out, diag);
}

static int resource_json_display_name(const json_t *value, char **out, struct sp_diag *diag)
{
	const char *s;
	int r;

	*out = NULL;
	if (value == NULL || json_is_null(value))
		return 0;
	r = resource_json_string(value, "name", &s, diag);
	if (r < 0)
		return r;
	size_t len = strlen(s);
	if (len > SP_RESOURCE_DISPLAY_NAME_MAX)
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"name\" is longer than %d bytes",
				   SP_RESOURCE_DISPLAY_NAME_MAX);
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "field \"name\" holds a control character at byte %zu",
					   i + 1);
	*out = resource_strndup(s, len);
	return *out != NULL ? 0 : SP_ERR_NOMEM;
}

static int resource_json_alias(const json_t *value, struct sp_resource *out, struct sp_diag *diag)
{
	char normal[SP_RESOURCE_NAME_BUF];
	struct sp_diag inner = {{0}};
	const char *s;
	size_t len;
	int r;

	if (value == NULL || json_is_null(value))
		return 0;
	r = resource_json_string(value, "alias", &s, diag);
	if (r < 0)
		return r;
	r = sp_resource_name_normalize(s, normal, &len, &inner);
	if (r < 0)
		return sp_diag_set(diag, r, "field \"alias\": %s", inner.message);
	out->alias = resource_strndup(normal, len);
	if (out->alias == NULL)
		return SP_ERR_NOMEM;
	out->alias_len = len;
	return 0;
}

int sp_resource_from_json(const json_t *object, struct sp_resource *out, struct sp_diag *diag)
{
	struct sp_diag inner = {{0}};
	const char *address;
	const json_t *value;
	int r = SP_ERR_INTERNAL;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(object))
		return sp_diag_set(diag, SP_ERR_INVALID, "a resource must be a JSON object");
	/* jansson's iterators take a non-const object; they only read it here. */
	json_t *mutable_object = (json_t *)object;
	for (void *it = json_object_iter(mutable_object); it != NULL;
	     it = json_object_iter_next(mutable_object, it)) {
		const char *key = json_object_iter_key(it);
		bool known = false;
		for (size_t i = 0; i < sizeof(resource_fields) / sizeof(resource_fields[0]); i++)
			if (strcmp(key, resource_fields[i]) == 0)
				known = true;
		if (!known) {
			char echo[RESOURCE_ECHO_MAX + 4];
			resource_echo(key, echo);
			return sp_diag_set(diag, SP_ERR_INVALID, "unknown field \"%s\"", echo);
		}
	}

	value = json_object_get(object, "address");
	if (value == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "field \"address\" is missing");
	r = resource_json_string(value, "address", &address, diag);
	if (r < 0)
		goto fail;
	r = sp_resource_address_parse(address, &out->address, &inner);
	if (r < 0) {
		r = sp_diag_set(diag, r, "field \"address\": %s", inner.message);
		goto fail;
	}
	r = resource_json_id(json_object_get(object, "id"), "id", &out->id, diag);
	if (r < 0)
		goto fail;
	r = resource_json_id(json_object_get(object, "network_id"), "network_id", &out->network_id,
			     diag);
	if (r < 0)
		goto fail;
	r = resource_json_display_name(json_object_get(object, "name"), &out->name, diag);
	if (r < 0)
		goto fail;
	r = resource_json_alias(json_object_get(object, "alias"), out, diag);
	if (r < 0)
		goto fail;
	r = resource_json_ports(json_object_get(object, "tcp"), "tcp", &out->tcp, diag);
	if (r < 0)
		goto fail;
	r = resource_json_ports(json_object_get(object, "udp"), "udp", &out->udp, diag);
	if (r < 0)
		goto fail;
	value = json_object_get(object, "icmp");
	out->icmp = true;
	if (value != NULL) {
		if (!json_is_boolean(value)) {
			r = sp_diag_set(diag, SP_ERR_INVALID,
					"field \"icmp\" must be true or false");
			goto fail;
		}
		out->icmp = json_is_true(value);
	}
	return 0;
fail:
	sp_resource_free(out);
	return r;
}

int sp_resource_list_from_json(const json_t *array, struct sp_resource **out, size_t *count,
			       struct sp_diag *diag)
{
	struct sp_resource *list = NULL;
	struct sp_diag inner = {{0}};
	size_t n, done = 0;
	int r = SP_ERR_INTERNAL;

	*out = NULL;
	*count = 0;
	if (!json_is_array(array))
		return sp_diag_set(diag, SP_ERR_INVALID, "resources must be a JSON array");
	n = json_array_size(array);
	if (n > SP_RESOURCE_MAX_COUNT)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "more than %d resources",
				   SP_RESOURCE_MAX_COUNT);
	list = calloc(n != 0 ? n : 1, sizeof(list[0]));
	if (list == NULL)
		return SP_ERR_NOMEM;
	for (; done < n; done++) {
		r = sp_resource_from_json(json_array_get(array, done), &list[done], &inner);
		if (r < 0) {
			r = sp_diag_set(diag, r, "resources[%zu]: %s", done, inner.message);
			goto fail;
		}
	}
	*out = list;
	*count = n;
	return 0;
fail:
	sp_resource_list_free(list, done);
	return r;
}

void sp_resource_list_free(struct sp_resource *resources, size_t count)
{
	if (resources == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		sp_resource_free(&resources[i]);
	free(resources);
}

/* Adds a new reference under key; consumes value even on failure. */
static int resource_json_set(json_t *object, const char *key, json_t *value)
{
	if (value == NULL)
		return SP_ERR_NOMEM;
	return json_object_set_new(object, key, value) == -1 ? SP_ERR_NOMEM : 0;
}

int sp_resource_to_json(const struct sp_resource *res, json_t **out)
{
	char address[SP_RESOURCE_ADDRESS_TEXT_MAX];
	json_t *object = NULL, *ports = NULL;
	int r = SP_ERR_INTERNAL;

	*out = NULL;
	r = sp_resource_address_format(&res->address, address, sizeof(address));
	if (r < 0)
		return r;
	object = json_object();
	if (object == NULL)
		return SP_ERR_NOMEM;
	r = resource_json_set(object, "id", json_integer((json_int_t)res->id));
	if (r == 0)
		r = resource_json_set(object, "network_id",
				      json_integer((json_int_t)res->network_id));
	if (r == 0 && res->name != NULL)
		r = resource_json_set(object, "name", json_string(res->name));
	if (r == 0)
		r = resource_json_set(object, "address", json_string(address));
	if (r == 0 && res->alias != NULL)
		r = resource_json_set(object, "alias", json_string(res->alias));
	if (r == 0 && (r = sp_portset_to_json(&res->tcp, &ports)) == 0)
		r = resource_json_set(object, "tcp", ports);
	if (r == 0 && (r = sp_portset_to_json(&res->udp, &ports)) == 0)
		r = resource_json_set(object, "udp", ports);
	if (r == 0)
		r = resource_json_set(object, "icmp", json_boolean(res->icmp));
	if (r < 0) {
		json_decref(object);
		return r;
	}
	*out = object;
	return 0;
}

int sp_resource_copy(const struct sp_resource *res, struct sp_resource *out)
{
	memset(out, 0, sizeof(*out));
	out->id = res->id;
	out->network_id = res->network_id;
	out->icmp = res->icmp;
	out->address = res->address;
	out->address.name = NULL;
	out->alias_len = res->alias_len;
	if (res->address.name != NULL && (out->address.name = resource_strndup(
					      res->address.name, res->address.name_len)) == NULL)
		goto nomem;
	if (res->name != NULL &&
	    (out->name = resource_strndup(res->name, strlen(res->name))) == NULL)
		goto nomem;
	if (res->alias != NULL &&
	    (out->alias = resource_strndup(res->alias, res->alias_len)) == NULL)
		goto nomem;
	if (sp_portset_copy(&res->tcp, &out->tcp) < 0 || sp_portset_copy(&res->udp, &out->udp) < 0)
		goto nomem;
	return 0;
nomem:
	sp_resource_free(out);
	return SP_ERR_NOMEM;
}

void sp_resource_free(struct sp_resource *res)
{
	if (res == NULL)
		return;
	free(res->name);
	free(res->alias);
	sp_resource_address_free(&res->address);
	sp_portset_free(&res->tcp);
	sp_portset_free(&res->udp);
	memset(res, 0, sizeof(*res));
}

static enum sp_resource_reason resource_check_ports(const struct sp_portset *ports, uint16_t port)
{
	if (sp_portset_is_none(ports))
		return SP_RESOURCE_PROTOCOL_NOT_ALLOWED;
	return sp_portset_contains(ports, port) ? SP_RESOURCE_ALLOWED
						: SP_RESOURCE_PORT_NOT_ALLOWED;
}

enum sp_resource_reason sp_resource_check(const struct sp_resource *res, int protocol,
					  uint16_t port)
{
	if (res == NULL)
		return SP_RESOURCE_NO_RESOURCE;
	switch (protocol) {
	case SP_RESOURCE_PROTOCOL_TCP:
		return resource_check_ports(&res->tcp, port);
	case SP_RESOURCE_PROTOCOL_UDP:
		return resource_check_ports(&res->udp, port);
	case SP_RESOURCE_PROTOCOL_ICMP:
	case SP_RESOURCE_PROTOCOL_ICMPV6:
		return res->icmp ? SP_RESOURCE_ALLOWED : SP_RESOURCE_PROTOCOL_NOT_ALLOWED;
	default:
		return SP_RESOURCE_PROTOCOL_NOT_ALLOWED;
	}
}

bool sp_resource_allows(const struct sp_resource *res, int protocol, uint16_t port)
{
	return sp_resource_check(res, protocol, port) == SP_RESOURCE_ALLOWED;
}

const char *sp_resource_reason_name(enum sp_resource_reason reason)
{
	switch (reason) {
	case SP_RESOURCE_ALLOWED:
		return "allowed";
	case SP_RESOURCE_NO_RESOURCE:
		return "no_resource";
	case SP_RESOURCE_PORT_NOT_ALLOWED:
		return "port_not_allowed";
	case SP_RESOURCE_PROTOCOL_NOT_ALLOWED:
		return "protocol_not_allowed";
	}
	return "unknown";
}

bool sp_resource_matches_name(const struct sp_resource *res, const char *name, size_t name_len)
{
	if (res->alias != NULL && res->alias_len == name_len &&
	    memcmp(res->alias, name, name_len) == 0)
		return true;
	switch (res->address.kind) {
	case SP_RESOURCE_ADDRESS_NAME:
		return res->address.name_len == name_len &&
		       memcmp(res->address.name, name, name_len) == 0;
	case SP_RESOURCE_ADDRESS_PATTERN:
		return sp_resource_name_pattern_matches(res->address.name, res->address.name_len,
							name, name_len);
	default:
		return false;
	}
}

bool sp_resource_address_allows_ip(const struct sp_resource *res, int family, const uint8_t *addr)
{
	if (res == NULL || res->address.kind != SP_RESOURCE_ADDRESS_CIDR)
		return false;
	return sp_cidr_contains(&res->address.cidr, family, addr);
}
