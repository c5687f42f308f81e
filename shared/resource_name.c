/* shared/resource_name.c — see resource_name.h. */
#include "shared/resource_name.h"

#include <string.h>

/* How much of a bad name the diag echoes. */
#define NAME_ECHO_MAX 80

static bool name_is_wildcard(char c)
{
	return c == '*' || c == '?';
}

/* State of the label being read. */
struct name_label {
	unsigned number;   /* 1-based, for diags */
	size_t length;	   /* characters written for this label */
	bool all_digits;   /* so far only digits */
	bool has_wildcard; /* holds '*' or '?' */
	bool underscore;   /* begins with '_' */
	char last;	   /* last character written */
};

/* Checks a completed label. `is_last` applies the rules for the final label. */
static int name_end_label(const struct name_label *label, bool is_last, bool pattern,
			  const char *echo, struct sp_diag *diag)
{
	if (label->length == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "\"%s\": label %u is empty", echo,
				   label->number);
	if (label->last == '-')
		return sp_diag_set(diag, SP_ERR_INVALID, "\"%s\": label %u ends with a hyphen",
				   echo, label->number);
	if (label->underscore && label->length == 1)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "\"%s\": label %u is a lone '_'; a character must follow it",
				   echo, label->number);
	if (!is_last)
		return 0;
	if (label->all_digits)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "\"%s\": the last label is all digits, which makes it look like "
				   "an IP address",
				   echo);
	if (pattern && label->has_wildcard)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "\"%s\": the last label must not hold a wildcard, so a pattern "
				   "cannot span top-level domains",
				   echo);
	return 0;
}

static int name_parse(const char *text, bool pattern, char out[SP_RESOURCE_NAME_BUF],
		      size_t *out_len, struct sp_resource_name_specificity *specificity,
		      struct sp_diag *diag)
{
	char echo[NAME_ECHO_MAX + 4];
	const char *kind = pattern ? "wildcard pattern" : "host name";
	struct sp_resource_name_specificity spec = {0, 0, 0};
	struct name_label label = {1, 0, true, false, false, '\0'};
	size_t len, written = 0;
	int r;

	out[0] = '\0';
	if (out_len != NULL)
		*out_len = 0;
	if (specificity != NULL)
		*specificity = spec;
	if (text == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s is missing", kind);
	len = strnlen(text, SP_RESOURCE_NAME_MAX + 2);
	sp_diag_echo(text, len, echo, sizeof(echo));
	if (len > 0 && text[len - 1] == '.')
		len--;
	if (len > SP_RESOURCE_NAME_MAX)
		return sp_diag_set(diag, SP_ERR_INVALID, "\"%s\": %s is longer than %d characters",
				   echo, kind, SP_RESOURCE_NAME_MAX);
	if (len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "%s is empty", kind);

	for (size_t i = 0; i < len; i++) {
		char c = text[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (c == '.') {
			r = name_end_label(&label, false, pattern, echo, diag);
			if (r < 0)
				goto fail;
			out[written++] = '.';
			spec.literals++;
			label = (struct name_label){label.number + 1, 0, true, false, false, '\0'};
			continue;
		}
		if (name_is_wildcard(c)) {
			if (!pattern) {
				r = sp_diag_set(
				    diag, SP_ERR_INVALID,
				    "\"%s\": wildcards ('*', '?') are not allowed in a %s", echo,
				    kind);
				goto fail;
			}
			if (c == '*' && label.last == '*')
				continue; /* "**" is "*" */
			if (c == '*')
				spec.stars++;
			else
				spec.questions++;
			label.has_wildcard = true;
		} else if (c == '-') {
			if (label.length == 0 || (label.length == 1 && label.underscore)) {
				r = sp_diag_set(diag, SP_ERR_INVALID,
						"\"%s\": label %u starts with a hyphen", echo,
						label.number);
				goto fail;
			}
			spec.literals++;
		} else if (c == '_') {
			if (label.length != 0) {
				r = sp_diag_set(
				    diag, SP_ERR_INVALID,
				    "\"%s\": '_' is only allowed as the first character of a "
				    "label (label %u)",
				    echo, label.number);
				goto fail;
			}
			label.underscore = true;
			spec.literals++;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
			spec.literals++;
		} else {
			unsigned char byte = (unsigned char)text[i];
			if (byte >= 0x20 && byte < 0x7f)
				r = sp_diag_set(
				    diag, SP_ERR_INVALID,
				    "\"%s\": character '%c' at position %zu is not allowed "
				    "in a %s",
				    echo, (char)byte, i + 1, kind);
			else
				r = sp_diag_set(
				    diag, SP_ERR_INVALID,
				    "\"%s\": byte 0x%02x at position %zu is not allowed in a "
				    "%s (use the xn-- form for international names)",
				    echo, (unsigned)byte, i + 1, kind);
			goto fail;
		}
		if (c < '0' || c > '9')
			label.all_digits = false;
		if (++label.length > SP_RESOURCE_NAME_LABEL_MAX) {
			r = sp_diag_set(diag, SP_ERR_INVALID,
					"\"%s\": label %u is longer than %d characters", echo,
					label.number, SP_RESOURCE_NAME_LABEL_MAX);
			goto fail;
		}
		label.last = c;
		out[written++] = c;
	}
	r = name_end_label(&label, true, pattern, echo, diag);
	if (r < 0)
		goto fail;
	if (pattern && spec.stars == 0 && spec.questions == 0) {
		r = sp_diag_set(diag, SP_ERR_INVALID,
				"\"%s\": pattern has no wildcard; use it as a plain name", echo);
		goto fail;
	}
	out[written] = '\0';
	if (out_len != NULL)
		*out_len = written;
	if (specificity != NULL)
		*specificity = spec;
	return 0;
fail:
	out[0] = '\0';
	return r;
}

int sp_resource_name_normalize(const char *text, char out[SP_RESOURCE_NAME_BUF], size_t *out_len,
			       struct sp_diag *diag)
{
	return name_parse(text, false, out, out_len, NULL, diag);
}

int sp_resource_name_parse_pattern(const char *text, char out[SP_RESOURCE_NAME_BUF],
				   size_t *out_len,
				   struct sp_resource_name_specificity *specificity,
				   struct sp_diag *diag)
{
	return name_parse(text, true, out, out_len, specificity, diag);
}

bool sp_resource_name_pattern_matches(const char *pattern, size_t pattern_len, const char *name,
				      size_t name_len)
{
	/*
	 * Left to right, remembering only the most recent '*': when a later comparison
	 * fails, that star absorbs one more character and the rest is retried. Forgetting
	 * earlier stars is safe because a '*' matches any run of characters, so whatever
	 * an earlier star could have absorbed, the later one can absorb instead.
	 */
	size_t p = 0, n = 0, star_p = SIZE_MAX, star_n = 0;

	while (n < name_len) {
		if (p < pattern_len && pattern[p] == '*') {
			star_p = ++p;
			star_n = n;
			continue;
		}
		if (p < pattern_len &&
		    (pattern[p] == name[n] || (pattern[p] == '?' && name[n] != '.'))) {
			p++;
			n++;
			continue;
		}
		if (star_p == SIZE_MAX)
			return false;
		p = star_p;
		n = ++star_n;
	}
	while (p < pattern_len && pattern[p] == '*')
		p++;
	return p == pattern_len;
}

int sp_resource_name_specificity_compare(const struct sp_resource_name_specificity *a,
					 const struct sp_resource_name_specificity *b)
{
	if (a->literals != b->literals)
		return a->literals > b->literals ? -1 : 1;
	if (a->stars != b->stars)
		return a->stars < b->stars ? -1 : 1;
	if (a->questions != b->questions)
		return a->questions < b->questions ? -1 : 1;
	return 0;
}

int sp_resource_name_pattern_key(const char *pattern, size_t pattern_len, size_t *key_offset)
{
	size_t last_wildcard = SIZE_MAX;

	*key_offset = 0;
	for (size_t i = 0; i < pattern_len; i++)
		if (name_is_wildcard(pattern[i]))
			last_wildcard = i;
	if (last_wildcard == SIZE_MAX)
		return SP_ERR_INVALID;
	const char *dot = memchr(pattern + last_wildcard, '.', pattern_len - last_wildcard);
	if (dot == NULL || (size_t)(dot - pattern) + 1 >= pattern_len)
		return SP_ERR_INVALID;
	*key_offset = (size_t)(dot - pattern) + 1;
	return 0;
}
