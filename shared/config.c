/* shared/config.c — see config.h and docs/config.md. */
#include "shared/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define ENV_PREFIX "SALLYPORT_"
#define ENV_PREFIX_LEN (sizeof(ENV_PREFIX) - 1)
/* How much of a bad value a diag repeats. */
#define ECHO_MAX 64
/* Room for the "where" part of a diag and for a reason. */
#define WHERE_MAX 160
#define REASON_MAX 192

/* ---- small helpers ---------------------------------------------------------------- */

static int is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int is_control(uint8_t c)
{
	return c < 0x20 || c == 0x7f;
}

static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static char ascii_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* Does the n bytes at s equal NUL-terminated word, ignoring ASCII case? */
static int equal_nocase(const char *s, size_t n, const char *word)
{
	size_t i = 0;
	for (; i < n; i++)
		if (word[i] == '\0' || ascii_lower(s[i]) != ascii_lower(word[i]))
			return 0;
	return word[i] == '\0';
}

static int starts_with_nocase(const char *s, size_t n, const char *prefix)
{
	size_t p = strlen(prefix);
	return n >= p && equal_nocase(s, p, prefix);
}

/* A heap copy of n bytes plus a NUL. */
static char *copy_bytes(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	if (out == NULL)
		return NULL;
	if (n != 0)
		memcpy(out, s, n);
	out[n] = '\0';
	return out;
}

/*
 * A bad value as a diag repeats it: in quotes, at most ECHO_MAX bytes, anything but
 * printable ASCII as '?', so a diag is one clean line whatever the input held.
 */
static void echo_value(const char *v, size_t n, char *out, size_t size)
{
	size_t o = 0;
	out[o++] = '"';
	for (size_t i = 0; i < n && i < ECHO_MAX && o + 5 < size; i++) {
		uint8_t c = (uint8_t)v[i];
		out[o++] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
	}
	if (n > ECHO_MAX && o + 5 < size) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o++] = '"';
	out[o] = '\0';
}

/* The flag spelling of a key name: "http_listen" -> "http-listen". */
static void flag_name(const char *name, char out[SP_CONFIG_NAME_MAX + 1])
{
	size_t i = 0;
	for (; i < SP_CONFIG_NAME_MAX && name[i] != '\0'; i++)
		out[i] = name[i] == '_' ? '-' : name[i];
	out[i] = '\0';
}

/* The environment variable of a key name: "http_listen" -> "SALLYPORT_HTTP_LISTEN". */
static void env_name(const char *name, char out[ENV_PREFIX_LEN + SP_CONFIG_NAME_MAX + 1])
{
	memcpy(out, ENV_PREFIX, ENV_PREFIX_LEN);
	size_t i = 0;
	for (; i < SP_CONFIG_NAME_MAX && name[i] != '\0'; i++)
		out[ENV_PREFIX_LEN + i] = ascii_upper(name[i]);
	out[ENV_PREFIX_LEN + i] = '\0';
}

/* Index of the key spelled by the n bytes at s (a dash counts as an underscore), or -1. */
static int find_key(const struct sp_config *cfg, const char *s, size_t n)
{
	for (size_t k = 0; k < cfg->count; k++) {
		const char *name = cfg->schema[k].name;
		size_t i = 0;
		for (; i < n; i++) {
			char c = s[i] == '-' ? '_' : s[i];
			if (name[i] == '\0' || name[i] != c)
				break;
		}
		if (i == n && name[i] == '\0')
			return (int)k;
	}
	return -1;
}

/* Index of the key whose environment name (after SALLYPORT_) is the n bytes at s, or -1. */
static int find_env_key(const struct sp_config *cfg, const char *s, size_t n)
{
	for (size_t k = 0; k < cfg->count; k++) {
		const char *name = cfg->schema[k].name;
		size_t i = 0;
		for (; i < n; i++)
			if (name[i] == '\0' || ascii_upper(name[i]) != s[i])
				break;
		if (i == n && name[i] == '\0')
			return (int)k;
	}
	return -1;
}

/* ---- slots and layers --------------------------------------------------------------- */

static int key_is_secret(const struct sp_config *cfg, size_t k)
{
	return (cfg->schema[k].flags & SP_CONFIG_SECRET) != 0;
}

static void slot_clear(struct sp_config_slot *slot, int secret)
{
	if (slot->text != NULL) {
		if (secret)
			OPENSSL_cleanse(slot->text, strlen(slot->text));
		free(slot->text);
	}
	free(slot->source);
	memset(slot, 0, sizeof(*slot));
}

static struct sp_config_slot *slot_at(const struct sp_config *cfg, size_t k, int layer)
{
	return &cfg->slots[k * SP_CONFIG_LAYERS + (size_t)layer];
}

/* A zeroed scratch layer: one slot per key. */
static struct sp_config_slot *scratch_new(const struct sp_config *cfg)
{
	return calloc(cfg->count != 0 ? cfg->count : 1, sizeof(struct sp_config_slot));
}

static void scratch_free(const struct sp_config *cfg, struct sp_config_slot *scratch)
{
	if (scratch == NULL)
		return;
	for (size_t k = 0; k < cfg->count; k++)
		slot_clear(&scratch[k], key_is_secret(cfg, k));
	free(scratch);
}

/* Replaces `layer` with the scratch slots (which are consumed). Cannot fail. */
static void scratch_commit(struct sp_config *cfg, int layer, struct sp_config_slot *scratch)
{
	for (size_t k = 0; k < cfg->count; k++) {
		struct sp_config_slot *slot = slot_at(cfg, k, layer);
		slot_clear(slot, key_is_secret(cfg, k));
		*slot = scratch[k];
	}
	free(scratch);
}

/* The slot that decides key k: the highest layer that sets it, or NULL. */
static const struct sp_config_slot *effective_slot(const struct sp_config *cfg, size_t k)
{
	for (int layer = SP_CONFIG_LAYERS - 1; layer >= 0; layer--) {
		const struct sp_config_slot *slot = slot_at(cfg, k, layer);
		if (slot->set)
			return slot;
	}
	return NULL;
}

/* ---- value parsers ------------------------------------------------------------------ */

/* Decimal with optional '-'. 0; -1 when not a number; -2 when past the int64 range. */
static int parse_int(const char *v, size_t n, int64_t *out)
{
	*out = 0;
	size_t i = 0;
	int negative = 0;
	if (n > 0 && v[0] == '-') {
		negative = 1;
		i = 1;
	}
	if (i == n)
		return -1;
	uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	uint64_t value = 0;
	for (; i < n; i++) {
		if (!is_digit(v[i]))
			return -1;
		unsigned d = (unsigned)(v[i] - '0');
		if (value > (limit - d) / 10) {
			/* Tell a number that is too long apart from one that is not a number. */
			while (i < n && is_digit(v[i]))
				i++;
			return i == n ? -2 : -1;
		}
		value = value * 10 + d;
	}
	if (negative)
		*out = value == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)value;
	else
		*out = (int64_t)value;
	return 0;
}

static const char *const true_words[] = {"true", "yes", "on", "1", NULL};
static const char *const false_words[] = {"false", "no", "off", "0", NULL};

static int word_in(const char *v, size_t n, const char *const *words)
{
	for (size_t i = 0; words[i] != NULL; i++)
		if (equal_nocase(v, n, words[i]))
			return 1;
	return 0;
}

static const char duration_syntax[] =
    "is not a valid duration (expected a number and a unit: ms, s, m, h or d, e.g. 30s)";

/* NULL and *ms on success, else the reason. */
static const char *duration_parse(const char *v, size_t n, int64_t *ms)
{
	*ms = 0;
	if (n == 1 && v[0] == '0')
		return NULL;
	if (n == 0)
		return duration_syntax;
	int64_t total = 0;
	size_t i = 0;
	while (i < n) {
		if (!is_digit(v[i]))
			return duration_syntax;
		int64_t number = 0;
		for (; i < n && is_digit(v[i]); i++) {
			int d = v[i] - '0';
			if (number > (INT64_MAX - d) / 10)
				return "is too large a duration";
			number = number * 10 + d;
		}
		int64_t unit;
		if (i + 1 < n && v[i] == 'm' && v[i + 1] == 's') {
			unit = 1;
			i += 2;
		} else if (i < n && (v[i] == 's' || v[i] == 'm' || v[i] == 'h' || v[i] == 'd')) {
			unit = v[i] == 's'   ? 1000
			       : v[i] == 'm' ? 60000
			       : v[i] == 'h' ? 3600000
					     : 86400000;
			i++;
		} else {
			return duration_syntax;
		}
		if (number > INT64_MAX / unit || total > INT64_MAX - number * unit)
			return "is too large a duration";
		total += number * unit;
	}
	*ms = total;
	return NULL;
}

/* Milliseconds in the largest unit that divides them: 3600000 -> "1h". */
static void format_duration(int64_t ms, char *out, size_t size)
{
	static const struct {
		int64_t ms;
		const char *unit;
	} units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
	if (ms != 0)
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
			if (ms % units[i].ms == 0) {
				snprintf(out, size, "%" PRId64 "%s", ms / units[i].ms,
					 units[i].unit);
				return;
			}
	snprintf(out, size, "%" PRId64 "%s", ms, ms == 0 ? "" : "ms");
}

/* NULL when the n bytes at h are a host name or IPv4 address, else the reason. */
static const char *check_host(const char *h, size_t n)
{
	if (n == 0)
		return "host is missing";
	if (n > 253)
		return "host name is too long";
	int numeric = 1;
	for (size_t i = 0; i < n; i++)
		if (!is_digit(h[i]) && h[i] != '.')
			numeric = 0;
	if (numeric) {
		char text[254];
		struct in_addr a4;
		memcpy(text, h, n);
		text[n] = '\0';
		return inet_pton(AF_INET, text, &a4) == 1 ? NULL : "bad IPv4 address";
	}
	size_t label = 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || h[i] == '.') {
			if (label == 0 || label > 63 || h[i - 1] == '-' || h[i - label] == '-')
				return "bad host name";
			label = 0;
			continue;
		}
		char c = h[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) ||
			 c == '-' || c == '_';
		if (!ok)
			return "bad host name";
		label++;
	}
	return NULL;
}

static const char port_range[] = "port must be 1-65535";

static const char *parse_port(const char *p, size_t n, uint16_t *port)
{
	if (n == 0 || n > 5)
		return port_range;
	unsigned value = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(p[i]))
			return port_range;
		value = value * 10 + (unsigned)(p[i] - '0');
	}
	if (value < 1 || value > 65535)
		return port_range;
	*port = (uint16_t)value;
	return NULL;
}

/*
 * HOST:PORT, [IPv6]:PORT, or (port_required == 0) the same without ":PORT", in which
 * case *port is 0. The host (no brackets) goes to host when it is not NULL. NULL on
 * success, else the reason.
 */
static const char *parse_hostport(const char *v, size_t n, int port_required, char *host,
				  size_t host_size, uint16_t *port)
{
	const char *h, *rest;
	size_t hn;
	*port = 0;
	if (host != NULL && host_size > 0)
		host[0] = '\0';
	if (n > 0 && v[0] == '[') {
		const char *close = memchr(v, ']', n);
		if (close == NULL)
			return "missing \"]\" after the IPv6 address";
		h = v + 1;
		hn = (size_t)(close - h);
		char text[INET6_ADDRSTRLEN];
		struct in6_addr a6;
		if (hn == 0 || hn >= sizeof(text))
			return "bad IPv6 address";
		memcpy(text, h, hn);
		text[hn] = '\0';
		if (inet_pton(AF_INET6, text, &a6) != 1)
			return "bad IPv6 address";
		rest = close + 1;
		if (rest != v + n && *rest != ':')
			return "unexpected text after \"]\"";
	} else {
		const char *colon = memrchr(v, ':', n);
		if (colon != NULL && memchr(v, ':', (size_t)(colon - v)) != NULL)
			return "IPv6 addresses go in brackets, e.g. [::1]:443";
		h = v;
		hn = colon != NULL ? (size_t)(colon - v) : n;
		const char *why = check_host(h, hn);
		if (why != NULL)
			return why;
		rest = colon != NULL ? colon : v + n;
	}
	if (rest == v + n) {
		if (port_required)
			return "expected HOST:PORT";
	} else {
		const char *why = parse_port(rest + 1, (size_t)(v + n - rest - 1), port);
		if (why != NULL)
			return why;
	}
	if (host != NULL) {
		if (hn >= host_size)
			return "host name is too long";
		memcpy(host, h, hn);
		host[hn] = '\0';
	}
	return NULL;
}

static const char *check_url(const char *v, size_t n)
{
	size_t off;
	if (starts_with_nocase(v, n, "https://"))
		off = 8;
	else if (starts_with_nocase(v, n, "http://"))
		off = 7;
	else
		return "scheme must be http or https";
	for (size_t i = 0; i < n; i++)
		if ((uint8_t)v[i] <= ' ' || (uint8_t)v[i] >= 0x7f)
			return "spaces and non-ASCII characters must be percent-encoded";
	size_t end = off;
	while (end < n && v[end] != '/' && v[end] != '?' && v[end] != '#')
		end++;
	if (memchr(v + off, '@', end - off) != NULL)
		return "user names and passwords are not allowed in the URL";
	if (end == off)
		return "host is missing";
	uint16_t port;
	return parse_hostport(v + off, end - off, 0, NULL, 0, &port);
}

/* "debug, info, warn, error", cut with "..." to fit. */
static void format_choices(const char *const *allowed, char *out, size_t size)
{
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; allowed[i] != NULL; i++) {
		int n = snprintf(out + o, size - o, "%s%s", i == 0 ? "" : ", ", allowed[i]);
		if (n < 0 || (size_t)n >= size - o) {
			if (size >= 4)
				memcpy(out + size - 4, "...", 4);
			return;
		}
		o += (size_t)n;
	}
}

/*
 * Checks the n bytes at v as a value of `key`. On success *text is a heap copy
 * (normalised for BOOL and ENUM) and *number the INT/BOOL/DURATION value. On
 * SP_ERR_INVALID, reason completes the sentence `"value" ...`.
 */
static int parse_value(const struct sp_config_key *key, const char *v, size_t n, char **text,
		       int64_t *number, char *reason, size_t reason_size)
{
	const char *why = NULL;
	const char *normal = NULL;
	*text = NULL;
	*number = 0;
	if (n > SP_CONFIG_VALUE_MAX) {
		snprintf(reason, reason_size, "is too long (at most %d bytes)",
			 SP_CONFIG_VALUE_MAX);
		return SP_ERR_INVALID;
	}
	for (size_t i = 0; i < n; i++)
		if (is_control((uint8_t)v[i])) {
			snprintf(reason, reason_size, "contains a control character");
			return SP_ERR_INVALID;
		}
	if (n != 0) {
		int64_t min = key->min, max = key->max;
		char lo[32], hi[32], choices[REASON_MAX - 32];
		switch (key->type) {
		case SP_CONFIG_STRING:
			break;
		case SP_CONFIG_INT:
			if (min == 0 && max == 0) {
				min = INT64_MIN;
				max = INT64_MAX;
			}
			int parsed = parse_int(v, n, number);
			if (parsed == -1) {
				snprintf(reason, reason_size, "is not an integer");
				return SP_ERR_INVALID;
			}
			if (parsed == -2 || *number < min || *number > max) {
				*number = 0;
				snprintf(reason, reason_size,
					 "is out of range (must be between %" PRId64 " and %" PRId64
					 ")",
					 min, max);
				return SP_ERR_INVALID;
			}
			break;
		case SP_CONFIG_BOOL:
			if (word_in(v, n, true_words)) {
				*number = 1;
				normal = "true";
			} else if (word_in(v, n, false_words)) {
				normal = "false";
			} else {
				snprintf(reason, reason_size,
					 "is not a boolean (use true or false)");
				return SP_ERR_INVALID;
			}
			break;
		case SP_CONFIG_ENUM:
			for (size_t i = 0; key->allowed[i] != NULL && normal == NULL; i++)
				if (equal_nocase(v, n, key->allowed[i]))
					normal = key->allowed[i];
			if (normal == NULL) {
				format_choices(key->allowed, choices, sizeof(choices));
				snprintf(reason, reason_size, "is not one of: %s", choices);
				return SP_ERR_INVALID;
			}
			break;
		case SP_CONFIG_DURATION:
			if (min == 0 && max == 0)
				max = INT64_MAX;
			why = duration_parse(v, n, number);
			if (why != NULL) {
				snprintf(reason, reason_size, "%s", why);
				return SP_ERR_INVALID;
			}
			if (*number < min || *number > max) {
				format_duration(min, lo, sizeof(lo));
				format_duration(max, hi, sizeof(hi));
				snprintf(reason, reason_size,
					 "is out of range (must be between %s and %s)", lo, hi);
				*number = 0;
				return SP_ERR_INVALID;
			}
			break;
		case SP_CONFIG_URL:
			why = check_url(v, n);
			if (why != NULL) {
				snprintf(reason, reason_size, "is not a valid URL (%s)", why);
				return SP_ERR_INVALID;
			}
			break;
		case SP_CONFIG_ADDRESS: {
			uint16_t port;
			why = parse_hostport(v, n, 1, NULL, 0, &port);
			if (why != NULL) {
				snprintf(reason, reason_size, "is not a valid address (%s)", why);
				return SP_ERR_INVALID;
			}
			break;
		}
		case SP_CONFIG_PATH:
			if (n > SP_CONFIG_PATH_MAX) {
				snprintf(reason, reason_size,
					 "is too long for a path (at most %d bytes)",
					 SP_CONFIG_PATH_MAX);
				return SP_ERR_INVALID;
			}
			break;
		default:
			snprintf(reason, reason_size, "has a type this build does not know");
			return SP_ERR_INTERNAL;
		}
	}
	*text = normal != NULL ? copy_bytes(normal, strlen(normal)) : copy_bytes(v, n);
	if (*text == NULL) {
		*number = 0;
		return SP_ERR_NOMEM;
	}
	return 0;
}

/*
 * Parses a value of key k into slot, or fills diag as "<where>: key "k": "value" why".
 * The source text is copied into the slot.
 */
static int set_slot(const struct sp_config *cfg, size_t k, struct sp_config_slot *slot,
		    const char *v, size_t n, const char *where, const char *source, unsigned line,
		    struct sp_diag *diag)
{
	const struct sp_config_key *key = &cfg->schema[k];
	char reason[REASON_MAX];
	char *text;
	int64_t number;
	int r = parse_value(key, v, n, &text, &number, reason, sizeof(reason));
	if (r == SP_ERR_NOMEM)
		return sp_diag_set(diag, r, "%s: out of memory", where);
	if (r < 0) {
		char echo[ECHO_MAX + 8];
		if (key_is_secret(cfg, k))
			snprintf(echo, sizeof(echo), "the value");
		else
			echo_value(v, n, echo, sizeof(echo));
		return sp_diag_set(diag, r, "%s: key \"%s\": %s %s", where, key->name, echo,
				   reason);
	}
	char *source_copy = copy_bytes(source, strlen(source));
	if (source_copy == NULL) {
		if (key_is_secret(cfg, k))
			OPENSSL_cleanse(text, strlen(text));
		free(text);
		return sp_diag_set(diag, SP_ERR_NOMEM, "%s: out of memory", where);
	}
	slot_clear(slot, key_is_secret(cfg, k));
	slot->set = 1;
	slot->text = text;
	slot->number = number;
	slot->line = line;
	slot->source = source_copy;
	return 0;
}

/* ---- init and free ------------------------------------------------------------------ */

static int check_schema_key(const struct sp_config_key *schema, size_t k, struct sp_diag *diag)
{
	const struct sp_config_key *key = &schema[k];
	const char *name = key->name;
	if (name == NULL || name[0] < 'a' || name[0] > 'z' || strlen(name) > SP_CONFIG_NAME_MAX)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "config schema: key %zu: name must be [a-z][a-z0-9_]*, at most "
				   "%d bytes",
				   k, SP_CONFIG_NAME_MAX);
	for (size_t i = 0; name[i] != '\0'; i++) {
		char c = name[i];
		if (!((c >= 'a' && c <= 'z') || is_digit(c) || c == '_'))
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "config schema: key \"%.64s\": name must be "
					   "[a-z][a-z0-9_]*",
					   name);
	}
	for (size_t j = 0; j < k; j++)
		if (strcmp(schema[j].name, name) == 0)
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "config schema: key \"%s\" is defined twice", name);
	if (key->type < SP_CONFIG_STRING || key->type > SP_CONFIG_PATH)
		return sp_diag_set(diag, SP_ERR_INVALID, "config schema: key \"%s\": unknown type",
				   name);
	if (key->type == SP_CONFIG_ENUM) {
		if (key->allowed == NULL || key->allowed[0] == NULL)
			return sp_diag_set(
			    diag, SP_ERR_INVALID,
			    "config schema: key \"%s\": an enum needs allowed values", name);
		for (size_t i = 0; key->allowed[i] != NULL; i++)
			if (key->allowed[i][0] == '\0')
				return sp_diag_set(diag, SP_ERR_INVALID,
						   "config schema: key \"%s\": empty allowed value",
						   name);
	}
	if (key->min > key->max)
		return sp_diag_set(diag, SP_ERR_INVALID, "config schema: key \"%s\": min > max",
				   name);
	return 0;
}

int sp_config_init(struct sp_config *cfg, const struct sp_config_key *schema, size_t count,
		   struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	memset(cfg, 0, sizeof(*cfg));
	if (count > SP_CONFIG_KEYS_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "config schema: more than %d keys",
				   SP_CONFIG_KEYS_MAX);
	if (schema == NULL && count != 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "config schema: no keys given");
	for (size_t k = 0; k < count; k++)
		if ((r = check_schema_key(schema, k, diag)) < 0)
			return r;
	cfg->schema = schema;
	cfg->count = count;
	cfg->slots = calloc(count != 0 ? count * SP_CONFIG_LAYERS : 1, sizeof(*cfg->slots));
	if (cfg->slots == NULL) {
		r = sp_diag_set(diag, SP_ERR_NOMEM, "config: out of memory");
		goto out;
	}
	for (size_t k = 0; k < count; k++) {
		const char *d = schema[k].default_value;
		if (d == NULL)
			continue;
		r = set_slot(cfg, k, slot_at(cfg, k, SP_CONFIG_LAYER_DEFAULT), d, strlen(d),
			     "config schema default", "default", 0, diag);
		if (r < 0) {
			if (r == SP_ERR_INTERNAL || r == SP_ERR_INVALID)
				r = SP_ERR_INVALID;
			goto out;
		}
	}
	r = 0;
out:
	if (r < 0)
		sp_config_free(cfg);
	return r;
}

void sp_config_free(struct sp_config *cfg)
{
	if (cfg == NULL)
		return;
	sp_config_file_abort(cfg);
	if (cfg->slots != NULL)
		for (size_t k = 0; k < cfg->count; k++)
			for (int layer = 0; layer < SP_CONFIG_LAYERS; layer++)
				slot_clear(slot_at(cfg, k, layer), key_is_secret(cfg, k));
	free(cfg->slots);
	memset(cfg, 0, sizeof(*cfg));
}

/* ---- the file layer -------------------------------------------------------------------- */

void sp_config_file_abort(struct sp_config *cfg)
{
	if (cfg == NULL)
		return;
	scratch_free(cfg, cfg->pending);
	free(cfg->pending_path);
	cfg->pending = NULL;
	cfg->pending_path = NULL;
	cfg->pending_error = 0;
	memset(&cfg->pending_diag, 0, sizeof(cfg->pending_diag));
}

int sp_config_file_begin(struct sp_config *cfg, const char *path)
{
	sp_config_file_abort(cfg);
	if (cfg->slots == NULL)
		return SP_ERR_INVALID;
	if (path == NULL)
		path = "(unnamed)";
	cfg->pending = scratch_new(cfg);
	cfg->pending_path = copy_bytes(path, strlen(path));
	if (cfg->pending == NULL || cfg->pending_path == NULL) {
		sp_config_file_abort(cfg);
		return SP_ERR_NOMEM;
	}
	return 0;
}

/* Ends of a quoted value: its unescaped bytes go to out (room for n bytes). */
static int parse_quoted(const char *v, size_t n, char *out, size_t *out_len, const char *where,
			const char *key, struct sp_diag *diag)
{
	size_t o = 0, i = 1; /* v[0] is the opening quote */
	*out_len = 0;
	for (; i < n; i++) {
		char c = v[i];
		if (c == '"')
			break;
		if (c == '\\') {
			if (i + 1 >= n) {
				i = n; /* a backslash at the end escapes nothing: unterminated */
				break;
			}
			char e = v[++i];
			if (e != '"' && e != '\\') {
				char shown = (uint8_t)e >= 0x20 && (uint8_t)e < 0x7f ? e : '?';
				return sp_diag_set(
				    diag, SP_ERR_INVALID,
				    "%s: key \"%s\": unknown escape \"\\%c\" in a quoted "
				    "value (only \\\" and \\\\ are allowed)",
				    where, key, shown);
			}
			c = e;
		}
		out[o++] = c;
	}
	if (i >= n)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s: key \"%s\": unterminated quoted value", where, key);
	for (i++; i < n && is_blank(v[i]); i++)
		;
	if (i < n && v[i] != '#')
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s: key \"%s\": unexpected text after the closing quote", where,
				   key);
	*out_len = o;
	return 0;
}

static int parse_file_line(struct sp_config *cfg, const char *line, size_t len, unsigned lineno,
			   struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	char where[WHERE_MAX];
	char *quoted = NULL;
	size_t quoted_cap = 0;
	snprintf(where, sizeof(where), "config file %.96s line %u", cfg->pending_path, lineno);
	if (len > SP_CONFIG_LINE_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "%s: line is longer than %d bytes",
				   where, SP_CONFIG_LINE_MAX);
	if (len != 0 && memchr(line, '\0', len) != NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: line contains a NUL byte", where);
	if (len > 0 && line[len - 1] == '\n')
		len--;
	if (len > 0 && line[len - 1] == '\r')
		len--;
	size_t b = 0, e = len;
	while (b < e && is_blank(line[b]))
		b++;
	while (e > b && is_blank(line[e - 1]))
		e--;
	if (b == e || line[b] == '#')
		return 0;
	const char *eq = memchr(line + b, '=', e - b);
	char echo[ECHO_MAX + 8];
	if (eq == NULL) {
		echo_value(line + b, e - b, echo, sizeof(echo));
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s: expected \"key = value\" but found %s (no \"=\")", where,
				   echo);
	}
	size_t key_end = (size_t)(eq - line);
	while (key_end > b && is_blank(line[key_end - 1]))
		key_end--;
	if (key_end == b)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: no key before \"=\"", where);
	int found = find_key(cfg, line + b, key_end - b);
	if (found < 0) {
		echo_value(line + b, key_end - b, echo, sizeof(echo));
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: unknown key %s", where, echo);
	}
	size_t k = (size_t)found;
	const struct sp_config_key *key = &cfg->schema[k];
	if ((key->flags & (SP_CONFIG_NOT_IN_FILE | SP_CONFIG_FLAG_ONLY)) != 0)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s: key \"%s\" cannot be set in a config file", where,
				   key->name);
	if (cfg->pending[k].set)
		return sp_diag_set(diag, SP_ERR_EXISTS, "%s: key \"%s\" is already set on line %u",
				   where, key->name, cfg->pending[k].line);

	size_t vb = (size_t)(eq - line) + 1, ve = e;
	while (vb < ve && is_blank(line[vb]))
		vb++;
	const char *value = line + vb;
	size_t value_len;
	if (vb < ve && line[vb] == '"') {
		quoted_cap = ve - vb;
		quoted = malloc(quoted_cap);
		if (quoted == NULL)
			return sp_diag_set(diag, SP_ERR_NOMEM, "%s: out of memory", where);
		r = parse_quoted(line + vb, ve - vb, quoted, &value_len, where, key->name, diag);
		if (r < 0)
			goto out;
		value = quoted;
	} else {
		/* An unquoted value ends where a comment starts: whitespace, then '#'. */
		for (size_t i = vb; i < ve; i++)
			if (line[i] == '#' && is_blank(line[i - 1])) {
				ve = i;
				break;
			}
		while (ve > vb && is_blank(line[ve - 1]))
			ve--;
		value_len = ve - vb;
	}
	char source[WHERE_MAX + 8];
	snprintf(source, sizeof(source), "file %s line %u", cfg->pending_path, lineno);
	/* A source longer than the buffer (a very long path) is cut; it is for people only. */
	r = set_slot(cfg, k, &cfg->pending[k], value, value_len, where, source, lineno, diag);
out:
	if (quoted != NULL) {
		OPENSSL_cleanse(quoted, quoted_cap);
		free(quoted);
	}
	return r;
}

int sp_config_feed_line(struct sp_config *cfg, const char *line, size_t len, unsigned lineno,
			struct sp_diag *diag)
{
	if (cfg->pending == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "config: a line was fed before sp_config_file_begin");
	if (cfg->pending_error != 0) {
		if (diag != NULL)
			*diag = cfg->pending_diag;
		return cfg->pending_error;
	}
	if (line == NULL && len != 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "config: NULL line");
	int r = parse_file_line(cfg, line, len, lineno, &cfg->pending_diag);
	if (r < 0) {
		cfg->pending_error = r;
		if (diag != NULL)
			*diag = cfg->pending_diag;
	}
	return r;
}

int sp_config_file_commit(struct sp_config *cfg, struct sp_diag *diag)
{
	if (cfg->pending == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "config: no config file is being read");
	int r = cfg->pending_error;
	if (r < 0) {
		if (diag != NULL)
			*diag = cfg->pending_diag;
		sp_config_file_abort(cfg);
		return r;
	}
	scratch_commit(cfg, SP_CONFIG_LAYER_FILE, cfg->pending);
	cfg->pending = NULL;
	sp_config_file_abort(cfg);
	return 0;
}

/* Fails when a file that others may read sets a secret key (see config.h). */
static int check_secret_exposure(const struct sp_config *cfg, const char *path, mode_t mode,
				 struct sp_diag *diag)
{
	if ((mode & S_IROTH) == 0)
		return 0;
	for (size_t k = 0; k < cfg->count; k++) {
		const struct sp_config_slot *slot = &cfg->pending[k];
		if (slot->set && slot->text[0] != '\0' && key_is_secret(cfg, k))
			return sp_diag_set(diag, SP_ERR_PERMISSION,
					   "config file %.96s line %u: key \"%s\" is a secret, but "
					   "others can read the file (fix with chmod o-r)",
					   path, slot->line, cfg->schema[k].name);
	}
	return 0;
}

/* Feeds the buffer to the pending layer line by line. */
static int feed_buffer(struct sp_config *cfg, const char *data, size_t len, struct sp_diag *diag)
{
	size_t start = 0;
	unsigned lineno = 1;
	while (start < len) {
		const char *nl = memchr(data + start, '\n', len - start);
		size_t end = nl != NULL ? (size_t)(nl - data) + 1 : len;
		int r = sp_config_feed_line(cfg, data + start, end - start, lineno, diag);
		if (r < 0)
			return r;
		start = end;
		lineno++;
	}
	return 0;
}

int sp_config_load_file(struct sp_config *cfg, const char *path, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	char *data = NULL;
	size_t len = 0;
	struct stat st;
	if (path == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "config file: no path given");
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd == -1) {
		if (errno == ENOENT)
			return sp_diag_set(diag, SP_ERR_NOT_FOUND,
					   "config file %.96s does not exist", path);
		return sp_diag_set(diag, SP_ERR_IO, "cannot open config file %.96s: %s", path,
				   strerror(errno));
	}
	if (fstat(fd, &st) == -1) {
		r = sp_diag_set(diag, SP_ERR_IO, "cannot stat config file %.96s: %s", path,
				strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "config file %.96s is not a regular file",
				path);
		goto out;
	}
	if ((uint64_t)st.st_size > SP_CONFIG_FILE_MAX) {
		r = sp_diag_set(diag, SP_ERR_TOO_LARGE,
				"config file %.96s is larger than %zu bytes", path,
				SP_CONFIG_FILE_MAX);
		goto out;
	}
	data = malloc(SP_CONFIG_FILE_MAX + 1);
	if (data == NULL) {
		r = sp_diag_set(diag, SP_ERR_NOMEM, "config file %.96s: out of memory", path);
		goto out;
	}
	/* Read one byte past the cap, so a file that grew since fstat is still refused. */
	while (len < SP_CONFIG_FILE_MAX + 1) {
		ssize_t n = read(fd, data + len, SP_CONFIG_FILE_MAX + 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			r = sp_diag_set(diag, SP_ERR_IO, "cannot read config file %.96s: %s", path,
					strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > SP_CONFIG_FILE_MAX) {
		r = sp_diag_set(diag, SP_ERR_TOO_LARGE,
				"config file %.96s is larger than %zu bytes", path,
				SP_CONFIG_FILE_MAX);
		goto out;
	}
	if ((r = sp_config_file_begin(cfg, path)) < 0) {
		r = sp_diag_set(diag, r, "config file %.96s: %s", path, sp_strerror(r));
		goto out;
	}
	r = feed_buffer(cfg, data, len, diag);
	if (r == 0)
		r = check_secret_exposure(cfg, path, st.st_mode, diag);
	if (r < 0) {
		sp_config_file_abort(cfg);
		goto out;
	}
	r = sp_config_file_commit(cfg, diag);
out:
	if (data != NULL) {
		OPENSSL_cleanse(data, len);
		free(data);
	}
	(void)close(fd);
	return r;
}

/* ---- the environment layer ------------------------------------------------------------ */

/* The key an envp entry sets, or -1; *value points after the '='. */
static int env_entry_key(const struct sp_config *cfg, const char *entry, const char **value)
{
	*value = NULL;
	if (strncmp(entry, ENV_PREFIX, ENV_PREFIX_LEN) != 0)
		return -1;
	const char *name = entry + ENV_PREFIX_LEN;
	const char *eq = strchr(name, '=');
	if (eq == NULL)
		return -1;
	int k = find_env_key(cfg, name, (size_t)(eq - name));
	if (k < 0 || (cfg->schema[k].flags & SP_CONFIG_FLAG_ONLY) != 0)
		return -1;
	*value = eq + 1;
	return k;
}

int sp_config_apply_env(struct sp_config *cfg, char *const envp[], struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	if (cfg->slots == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "config: not initialised");
	struct sp_config_slot *scratch = scratch_new(cfg);
	if (scratch == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "config: out of memory");
	for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
		const char *value;
		int found = env_entry_key(cfg, envp[i], &value);
		if (found < 0 || scratch[found].set)
			continue;
		size_t k = (size_t)found;
		char name[ENV_PREFIX_LEN + SP_CONFIG_NAME_MAX + 1];
		char where[WHERE_MAX], source[WHERE_MAX];
		env_name(cfg->schema[k].name, name);
		snprintf(where, sizeof(where), "environment variable %s", name);
		snprintf(source, sizeof(source), "env %s", name);
		r = set_slot(cfg, k, &scratch[k], value, strlen(value), where, source, 0, diag);
		if (r < 0)
			goto out;
	}
	scratch_commit(cfg, SP_CONFIG_LAYER_ENV, scratch);
	scratch = NULL;
	r = 0;
out:
	scratch_free(cfg, scratch);
	return r;
}

int sp_config_next_unknown_env(const struct sp_config *cfg, char *const envp[], size_t *cursor,
			       char *name, size_t name_size)
{
	if (name != NULL && name_size > 0)
		name[0] = '\0';
	for (; envp != NULL && envp[*cursor] != NULL; (*cursor)++) {
		const char *entry = envp[*cursor];
		const char *value;
		if (strncmp(entry, ENV_PREFIX, ENV_PREFIX_LEN) != 0 ||
		    env_entry_key(cfg, entry, &value) >= 0)
			continue;
		if (name != NULL && name_size > 0) {
			const char *eq = strchr(entry, '=');
			size_t n = eq != NULL ? (size_t)(eq - entry) : strlen(entry);
			if (n >= name_size)
				n = name_size - 1;
			memcpy(name, entry, n);
			name[n] = '\0';
		}
		(*cursor)++;
		return 1;
	}
	return 0;
}

/* ---- the flag layer -------------------------------------------------------------------- */

int sp_config_apply_args(struct sp_config *cfg, int argc, char *const argv[], int *rest,
			 struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	char echo[ECHO_MAX + 8];
	*rest = 0;
	if (cfg->slots == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "config: not initialised");
	struct sp_config_slot *scratch = scratch_new(cfg);
	if (scratch == NULL)
		return sp_diag_set(diag, SP_ERR_NOMEM, "config: out of memory");
	int i = argc > 0 ? 1 : 0;
	for (; i < argc && argv[i] != NULL; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "--") == 0) {
			i++;
			break;
		}
		if (arg[0] != '-' || arg[1] == '\0')
			break;
		if (arg[1] != '-') {
			echo_value(arg, strlen(arg), echo, sizeof(echo));
			r = sp_diag_set(diag, SP_ERR_INVALID,
					"unknown flag %s (flags are spelled --name)", echo);
			goto out;
		}
		const char *name = arg + 2;
		const char *eq = strchr(name, '=');
		size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
		int found = find_key(cfg, name, name_len);
		int negated = 0;
		if (found < 0 && eq == NULL && name_len > 3 &&
		    (strncmp(name, "no-", 3) == 0 || strncmp(name, "no_", 3) == 0)) {
			int bool_key = find_key(cfg, name + 3, name_len - 3);
			if (bool_key >= 0 && cfg->schema[bool_key].type == SP_CONFIG_BOOL) {
				found = bool_key;
				negated = 1;
			}
		}
		if (found < 0) {
			echo_value(arg, eq != NULL ? (size_t)(eq - arg) : strlen(arg), echo,
				   sizeof(echo));
			r = sp_diag_set(diag, SP_ERR_INVALID, "unknown flag %s", echo);
			goto out;
		}
		size_t k = (size_t)found;
		const struct sp_config_key *key = &cfg->schema[k];
		char flag[SP_CONFIG_NAME_MAX + 1];
		char where[WHERE_MAX];
		flag_name(key->name, flag);
		snprintf(where, sizeof(where), "flag --%s", flag);
		if (scratch[k].set) {
			r = sp_diag_set(diag, SP_ERR_EXISTS,
					"%s: key \"%s\" is given more than once", where, key->name);
			goto out;
		}
		const char *value;
		if (eq != NULL) {
			value = eq + 1;
		} else if (key->type == SP_CONFIG_BOOL) {
			value = negated ? "false" : "true";
		} else if (i + 1 < argc && argv[i + 1] != NULL) {
			value = argv[++i];
		} else {
			r = sp_diag_set(diag, SP_ERR_INVALID, "%s: key \"%s\" needs a value", where,
					key->name);
			goto out;
		}
		r = set_slot(cfg, k, &scratch[k], value, strlen(value), where, where, 0, diag);
		if (r < 0)
			goto out;
	}
	scratch_commit(cfg, SP_CONFIG_LAYER_FLAG, scratch);
	scratch = NULL;
	*rest = i;
	r = 0;
out:
	scratch_free(cfg, scratch);
	return r;
}

/* ---- reading the result ------------------------------------------------------------------ */

int sp_config_check_required(const struct sp_config *cfg, struct sp_diag *diag)
{
	for (size_t k = 0; k < cfg->count; k++) {
		const struct sp_config_key *key = &cfg->schema[k];
		if ((key->flags & SP_CONFIG_REQUIRED) == 0)
			continue;
		const struct sp_config_slot *slot = effective_slot(cfg, k);
		if (slot != NULL && slot->text[0] != '\0')
			continue;
		char flag[SP_CONFIG_NAME_MAX + 1];
		char env[ENV_PREFIX_LEN + SP_CONFIG_NAME_MAX + 1];
		flag_name(key->name, flag);
		env_name(key->name, env);
		return sp_diag_set(diag, SP_ERR_NOT_FOUND,
				   "key \"%s\" is required but not set (set %s or --%s)", key->name,
				   env, flag);
	}
	return 0;
}

/* The deciding slot of a key named by the caller, or NULL (unknown key or not set). */
static const struct sp_config_slot *lookup(const struct sp_config *cfg, const char *key,
					   const struct sp_config_key **schema_key)
{
	*schema_key = NULL;
	if (key == NULL || cfg->slots == NULL)
		return NULL;
	int k = find_key(cfg, key, strlen(key));
	if (k < 0)
		return NULL;
	*schema_key = &cfg->schema[k];
	return effective_slot(cfg, (size_t)k);
}

const char *sp_config_get_str(const struct sp_config *cfg, const char *key)
{
	const struct sp_config_key *schema_key;
	const struct sp_config_slot *slot = lookup(cfg, key, &schema_key);
	return slot != NULL && slot->text[0] != '\0' ? slot->text : NULL;
}

static int get_number(const struct sp_config *cfg, const char *key, enum sp_config_type type,
		      int64_t *out)
{
	*out = 0;
	const struct sp_config_key *schema_key;
	const struct sp_config_slot *slot = lookup(cfg, key, &schema_key);
	if (schema_key == NULL)
		return SP_ERR_NOT_FOUND;
	if (schema_key->type != type)
		return SP_ERR_INVALID;
	if (slot == NULL || slot->text[0] == '\0')
		return SP_ERR_NOT_FOUND;
	*out = slot->number;
	return 0;
}

int sp_config_get_int(const struct sp_config *cfg, const char *key, int64_t *out)
{
	return get_number(cfg, key, SP_CONFIG_INT, out);
}

int sp_config_get_bool(const struct sp_config *cfg, const char *key, int *out)
{
	int64_t v;
	int r = get_number(cfg, key, SP_CONFIG_BOOL, &v);
	*out = v != 0;
	return r;
}

int sp_config_get_duration_ms(const struct sp_config *cfg, const char *key, int64_t *out)
{
	return get_number(cfg, key, SP_CONFIG_DURATION, out);
}

const char *sp_config_source(const struct sp_config *cfg, const char *key)
{
	const struct sp_config_key *schema_key;
	const struct sp_config_slot *slot = lookup(cfg, key, &schema_key);
	if (schema_key == NULL)
		return NULL;
	return slot != NULL ? slot->source : "not set";
}

int sp_config_layer_of(const struct sp_config *cfg, const char *key)
{
	const struct sp_config_key *schema_key;
	const struct sp_config_slot *slot = lookup(cfg, key, &schema_key);
	if (slot == NULL)
		return SP_ERR_NOT_FOUND;
	return (int)((slot - cfg->slots) % SP_CONFIG_LAYERS);
}

/* "value" with '"' and '\\' escaped, or "[redacted]" for a set secret. */
static int put_quoted(struct sp_buf *out, const char *text, int secret)
{
	if (secret && text[0] != '\0')
		return sp_buf_put_str(out, "\"[redacted]\"");
	int r = sp_buf_put_u8(out, '"');
	for (size_t i = 0; r == 0 && text[i] != '\0'; i++) {
		if (text[i] == '"' || text[i] == '\\')
			r = sp_buf_put_u8(out, '\\');
		if (r == 0)
			r = sp_buf_put_u8(out, (uint8_t)text[i]);
	}
	return r == 0 ? sp_buf_put_u8(out, '"') : r;
}

int sp_config_dump(const struct sp_config *cfg, int all_layers, struct sp_buf *out)
{
	static const char *const layer_names[] = {"default", "file", "env", "flag"};
	int r = 0;
	for (size_t k = 0; k < cfg->count && r == 0; k++) {
		const struct sp_config_key *key = &cfg->schema[k];
		const struct sp_config_slot *slot = effective_slot(cfg, k);
		int secret = key_is_secret(cfg, k);
		r = sp_buf_printf(out, "%s = ", key->name);
		if (r == 0)
			r = put_quoted(out, slot != NULL ? slot->text : "", secret);
		if (r == 0) {
			if (slot == NULL)
				r = sp_buf_put_str(out, "  # not set\n");
			else if (slot->text[0] == '\0')
				r = sp_buf_printf(out, "  # not set (%s)\n", slot->source);
			else
				r = sp_buf_printf(out, "  # %s\n", slot->source);
		}
		for (int layer = 0; all_layers && layer < SP_CONFIG_LAYERS && r == 0; layer++) {
			const struct sp_config_slot *s = slot_at(cfg, k, layer);
			if (!s->set)
				continue;
			r = sp_buf_printf(out, "#   %s: ", layer_names[layer]);
			if (r == 0)
				r = put_quoted(out, s->text, secret);
			if (r == 0)
				r = sp_buf_printf(out, " (%s)\n", s->source);
		}
	}
	return r;
}

static void value_form(const struct sp_config_key *key, char *out, size_t size)
{
	switch (key->type) {
	case SP_CONFIG_INT:
		snprintf(out, size, " N");
		break;
	case SP_CONFIG_BOOL: {
		char flag[SP_CONFIG_NAME_MAX + 1];
		flag_name(key->name, flag);
		snprintf(out, size, ", --no-%s", flag);
		break;
	}
	case SP_CONFIG_ENUM: {
		size_t o = 0;
		out[0] = '\0';
		for (size_t i = 0; key->allowed[i] != NULL; i++) {
			int n = snprintf(out + o, size - o, "%s%s", i == 0 ? " " : "|",
					 key->allowed[i]);
			if (n < 0 || (size_t)n >= size - o)
				break;
			o += (size_t)n;
		}
		break;
	}
	case SP_CONFIG_DURATION:
		snprintf(out, size, " DURATION");
		break;
	case SP_CONFIG_URL:
		snprintf(out, size, " URL");
		break;
	case SP_CONFIG_ADDRESS:
		snprintf(out, size, " HOST:PORT");
		break;
	case SP_CONFIG_PATH:
		snprintf(out, size, " PATH");
		break;
	default:
		snprintf(out, size, " TEXT");
		break;
	}
}

int sp_config_help(const struct sp_config_key *schema, size_t count, struct sp_buf *out)
{
	int r = 0;
	for (size_t k = 0; k < count && r == 0; k++) {
		const struct sp_config_key *key = &schema[k];
		char flag[SP_CONFIG_NAME_MAX + 1];
		char env[ENV_PREFIX_LEN + SP_CONFIG_NAME_MAX + 1];
		char form[256];
		flag_name(key->name, flag);
		env_name(key->name, env);
		value_form(key, form, sizeof(form));
		r = sp_buf_printf(out, "  --%s%s\n", flag, form);
		if (r == 0 && key->help != NULL)
			r = sp_buf_printf(out, "      %s\n", key->help);
		if (r == 0)
			r = sp_buf_put_str(out, "      ");
		if (r == 0)
			r = (key->flags & SP_CONFIG_FLAG_ONLY) != 0
				? sp_buf_put_str(out, "command line only")
				: sp_buf_printf(out, "env %s", env);
		if (r == 0 && (key->flags & SP_CONFIG_NOT_IN_FILE) != 0)
			r = sp_buf_put_str(out, "; not in the config file");
		if (r == 0 && (key->flags & SP_CONFIG_REQUIRED) != 0)
			r = sp_buf_put_str(out, "; required");
		if (r == 0 && key->default_value != NULL && key->default_value[0] != '\0') {
			r = sp_buf_put_str(out, "; default ");
			if (r == 0)
				r = put_quoted(out, key->default_value,
					       (key->flags & SP_CONFIG_SECRET) != 0);
		}
		if (r == 0 && (key->min != 0 || key->max != 0)) {
			if (key->type == SP_CONFIG_DURATION) {
				char lo[32], hi[32];
				format_duration(key->min, lo, sizeof(lo));
				format_duration(key->max, hi, sizeof(hi));
				r = sp_buf_printf(out, "; %s to %s", lo, hi);
			} else if (key->type == SP_CONFIG_INT) {
				r = sp_buf_printf(out, "; %" PRId64 " to %" PRId64, key->min,
						  key->max);
			}
		}
		if (r == 0 && (key->flags & SP_CONFIG_SECRET) != 0)
			r = sp_buf_put_str(out, "; secret");
		if (r == 0)
			r = sp_buf_put_str(out, "\n");
	}
	return r;
}

/* ---- public value parsers -------------------------------------------------------------- */

int sp_config_parse_duration(const char *text, int64_t *ms, struct sp_diag *diag)
{
	*ms = 0;
	size_t n = text != NULL ? strlen(text) : 0;
	const char *why = duration_parse(text != NULL ? text : "", n, ms);
	if (why == NULL)
		return 0;
	char echo[ECHO_MAX + 8];
	echo_value(text != NULL ? text : "", n, echo, sizeof(echo));
	return sp_diag_set(diag, SP_ERR_INVALID, "%s %s", echo, why);
}

int sp_config_parse_address(const char *text, char *host, size_t host_size, uint16_t *port,
			    struct sp_diag *diag)
{
	size_t n = text != NULL ? strlen(text) : 0;
	const char *why = parse_hostport(text != NULL ? text : "", n, 1, host, host_size, port);
	if (why == NULL)
		return 0;
	*port = 0;
	if (host != NULL && host_size > 0)
		host[0] = '\0';
	char echo[ECHO_MAX + 8];
	echo_value(text != NULL ? text : "", n, echo, sizeof(echo));
	return sp_diag_set(diag, SP_ERR_INVALID, "%s is not a valid address (%s)", echo, why);
}
