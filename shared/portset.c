/* shared/portset.c — see portset.h. */
#include "shared/portset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for a diag prefix such as "tcp[1023]" or "port list item 1024". */
#define PORTSET_WHERE_MAX 48
/* How much of a bad item the diag echoes. */
#define PORTSET_ECHO_MAX 24

/* One decimal port: digits only, no leading zero, 1..65535. */
static int portset_parse_port(const char *s, size_t len, const char *where, uint16_t *out,
			      struct sp_diag *diag)
{
	char echo[PORTSET_ECHO_MAX + 4];
	uint32_t value = 0;

	*out = 0;
	sp_diag_echo(s, len, echo, sizeof(echo));
	if (len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: a port number is missing", where);
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "%s: \"%s\" is not a port number (digits only)", where,
					   echo);
		if (value <= 65535)
			value = value * 10 + (uint32_t)(s[i] - '0');
	}
	if (value == 0 || value > 65535)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: port %s is out of range 1-65535",
				   where, echo);
	if (s[0] == '0')
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: port \"%s\" has a leading zero",
				   where, echo);
	*out = (uint16_t)value;
	return 0;
}

/* One item "N" or "A-B". */
static int portset_parse_item(const char *s, size_t len, const char *where,
			      struct sp_portset_range *out, struct sp_diag *diag)
{
	const char *dash = memchr(s, '-', len);
	int r;

	out->first = out->last = 0;
	if (dash == NULL) {
		r = portset_parse_port(s, len, where, &out->first, diag);
		out->last = out->first;
		return r;
	}
	size_t first_len = (size_t)(dash - s);
	r = portset_parse_port(s, first_len, where, &out->first, diag);
	if (r < 0)
		return r;
	r = portset_parse_port(dash + 1, len - first_len - 1, where, &out->last, diag);
	if (r < 0)
		return r;
	if (out->first > out->last) {
		r = sp_diag_set(diag, SP_ERR_INVALID, "%s: range start %u is above its end %u",
				where, (unsigned)out->first, (unsigned)out->last);
		out->first = out->last = 0;
		return r;
	}
	return 0;
}

static int portset_range_order(const void *a, const void *b)
{
	const struct sp_portset_range *x = a, *y = b;
	if (x->first != y->first)
		return x->first < y->first ? -1 : 1;
	return x->last < y->last ? -1 : (x->last > y->last ? 1 : 0);
}

/* Sorts and merges `count` ranges (overlapping or touching) into a fresh set. */
static int portset_finish(struct sp_portset_range *ranges, size_t count, struct sp_portset *out)
{
	size_t merged = 0;

	if (count == 0)
		return 0;
	qsort(ranges, count, sizeof(ranges[0]), portset_range_order);
	for (size_t i = 1; i < count; i++) {
		struct sp_portset_range *cur = &ranges[merged];
		if ((uint32_t)ranges[i].first <= (uint32_t)cur->last + 1) {
			if (ranges[i].last > cur->last)
				cur->last = ranges[i].last;
		} else {
			ranges[++merged] = ranges[i];
		}
	}
	merged++;
	out->ranges = malloc(merged * sizeof(out->ranges[0]));
	if (out->ranges == NULL)
		return SP_ERR_NOMEM;
	memcpy(out->ranges, ranges, merged * sizeof(out->ranges[0]));
	out->count = (uint32_t)merged;
	return 0;
}

static int portset_make_all(struct sp_portset *out)
{
	out->ranges = malloc(sizeof(out->ranges[0]));
	if (out->ranges == NULL)
		return SP_ERR_NOMEM;
	out->ranges[0].first = 1;
	out->ranges[0].last = 65535;
	out->count = 1;
	return 0;
}

void sp_portset_free(struct sp_portset *set)
{
	if (set == NULL)
		return;
	free(set->ranges);
	set->ranges = NULL;
	set->count = 0;
}

int sp_portset_parse(const char *text, struct sp_portset *out, struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	struct sp_portset_range *ranges = NULL;
	size_t count = 0;

	memset(out, 0, sizeof(*out));
	if (text == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "port list is missing");
	size_t len = strnlen(text, SP_PORTSET_TEXT_MAX + 1);
	if (len > SP_PORTSET_TEXT_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "port list is longer than %d characters",
				   SP_PORTSET_TEXT_MAX);
	if (strcmp(text, "none") == 0)
		return 0;
	if (strcmp(text, "all") == 0)
		return portset_make_all(out);
	if (len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "port list is empty; write \"none\" for no ports");

	ranges = malloc(SP_PORTSET_MAX_ITEMS * sizeof(ranges[0]));
	if (ranges == NULL)
		return SP_ERR_NOMEM;
	const char *item = text, *end = text + len;
	for (;;) {
		const char *comma = memchr(item, ',', (size_t)(end - item));
		const char *item_end = comma != NULL ? comma : end;
		char where[PORTSET_WHERE_MAX];
		if (count == SP_PORTSET_MAX_ITEMS) {
			r = sp_diag_set(diag, SP_ERR_TOO_LARGE, "port list has more than %d items",
					SP_PORTSET_MAX_ITEMS);
			goto out;
		}
		snprintf(where, sizeof(where), "port list item %zu", count + 1);
		r = portset_parse_item(item, (size_t)(item_end - item), where, &ranges[count],
				       diag);
		if (r < 0)
			goto out;
		count++;
		if (comma == NULL)
			break;
		item = comma + 1;
	}
	r = portset_finish(ranges, count, out);
out:
	free(ranges);
	if (r < 0)
		sp_portset_free(out);
	return r;
}

int sp_portset_from_json(const json_t *value, const char *field, struct sp_portset *out,
			 struct sp_diag *diag)
{
	int r = SP_ERR_INTERNAL;
	struct sp_portset_range *ranges = NULL;
	size_t count;

	memset(out, 0, sizeof(*out));
	if (field == NULL)
		field = "ports";
	if (value == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s: missing", field);
	if (json_is_string(value)) {
		const char *s = json_string_value(value);
		if (strcmp(s, "all") == 0 && json_string_length(value) == 3)
			return portset_make_all(out);
		if (strcmp(s, "none") == 0 && json_string_length(value) == 4)
			return 0;
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s: a string must be \"all\" or \"none\"; list ports as an "
				   "array such as [\"22\", \"8000-8100\"]",
				   field);
	}
	if (!json_is_array(value))
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "%s: must be \"all\", \"none\" or an array of port strings",
				   field);
	count = json_array_size(value);
	if (count > SP_PORTSET_MAX_ITEMS)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "%s: more than %d items", field,
				   SP_PORTSET_MAX_ITEMS);
	if (count == 0)
		return 0;
	ranges = malloc(count * sizeof(ranges[0]));
	if (ranges == NULL)
		return SP_ERR_NOMEM;
	for (size_t i = 0; i < count; i++) {
		const json_t *item = json_array_get(value, i);
		char where[PORTSET_WHERE_MAX];
		snprintf(where, sizeof(where), "%.24s[%zu]", field, i);
		if (!json_is_string(item)) {
			r = sp_diag_set(diag, SP_ERR_INVALID,
					"%s: must be a string such as \"22\" or \"8000-8100\"",
					where);
			goto out;
		}
		r = portset_parse_item(json_string_value(item), json_string_length(item), where,
				       &ranges[i], diag);
		if (r < 0)
			goto out;
	}
	r = portset_finish(ranges, count, out);
out:
	free(ranges);
	if (r < 0)
		sp_portset_free(out);
	return r;
}

/* "N" or "A-B" into text (at least 12 bytes). */
static void portset_range_text(const struct sp_portset_range *range, char *text, size_t len)
{
	if (range->first == range->last)
		snprintf(text, len, "%u", (unsigned)range->first);
	else
		snprintf(text, len, "%u-%u", (unsigned)range->first, (unsigned)range->last);
}

int sp_portset_to_json(const struct sp_portset *set, json_t **out)
{
	json_t *array = NULL;

	*out = NULL;
	if (sp_portset_is_none(set) || sp_portset_is_all(set)) {
		*out = json_string(set->count == 0 ? "none" : "all");
		return *out != NULL ? 0 : SP_ERR_NOMEM;
	}
	array = json_array();
	if (array == NULL)
		return SP_ERR_NOMEM;
	for (uint32_t i = 0; i < set->count; i++) {
		char text[16];
		portset_range_text(&set->ranges[i], text, sizeof(text));
		if (json_array_append_new(array, json_string(text)) == -1) {
			json_decref(array);
			return SP_ERR_NOMEM;
		}
	}
	*out = array;
	return 0;
}

int sp_portset_format(const struct sp_portset *set, struct sp_buf *buf)
{
	if (sp_portset_is_none(set))
		return sp_buf_put_str(buf, "none");
	if (sp_portset_is_all(set))
		return sp_buf_put_str(buf, "all");
	for (uint32_t i = 0; i < set->count; i++) {
		char text[16];
		portset_range_text(&set->ranges[i], text, sizeof(text));
		int r = sp_buf_printf(buf, "%s%s", i == 0 ? "" : ",", text);
		if (r < 0)
			return r;
	}
	return 0;
}

int sp_portset_copy(const struct sp_portset *set, struct sp_portset *out)
{
	memset(out, 0, sizeof(*out));
	if (set->count == 0)
		return 0;
	out->ranges = malloc(set->count * sizeof(out->ranges[0]));
	if (out->ranges == NULL)
		return SP_ERR_NOMEM;
	memcpy(out->ranges, set->ranges, set->count * sizeof(out->ranges[0]));
	out->count = set->count;
	return 0;
}

bool sp_portset_contains(const struct sp_portset *set, uint16_t port)
{
	uint32_t low = 0, high = set->count;

	/* Find the last range whose first port is <= port, then check its end. */
	while (low < high) {
		uint32_t mid = low + (high - low) / 2;
		if (set->ranges[mid].first <= port)
			low = mid + 1;
		else
			high = mid;
	}
	return low > 0 && port != 0 && port <= set->ranges[low - 1].last;
}

bool sp_portset_is_none(const struct sp_portset *set)
{
	return set->count == 0;
}

bool sp_portset_is_all(const struct sp_portset *set)
{
	return set->count == 1 && set->ranges[0].first == 1 && set->ranges[0].last == 65535;
}

bool sp_portset_equal(const struct sp_portset *a, const struct sp_portset *b)
{
	if (a->count != b->count)
		return false;
	return a->count == 0 || memcmp(a->ranges, b->ranges, a->count * sizeof(a->ranges[0])) == 0;
}
