/*
 * shared/resource_name.h — host names and wildcard patterns as resources name them.
 *
 * Host names (a resource's FQDN address, its alias, and every name the client or the
 * connector is asked about) follow RFC 1123 with two Sallyport decisions:
 *   - labels are 1-63 characters of ASCII letters, digits and '-', not starting or
 *     ending with '-'; the whole name is at most 253 characters;
 *   - '_' is allowed as the first character of a label, followed by at least one
 *     more character ("_ldap._tcp.corp.example", the SRV/TXT convention), and nowhere
 *     else;
 *   - the last label must not be all digits, so "10.1.2.3" or "1.2.3.4.5" is never
 *     taken for a name (RFC 3696 section 2; it also keeps IP text out of name rules);
 *   - names are case-insensitive: parsing lower-cases them and drops one trailing dot.
 * Internationalised names must be given in their ASCII (xn--) form.
 *
 * Wildcard patterns are names whose labels may also hold '*' and '?':
 *   - '*' matches zero or more characters and DOES cross dots: "*.corp.example" matches
 *     "a.corp.example" and "a.b.corp.example" but not "corp.example" (the literal
 *     ".corp.example" must still be there, and a name never starts with a dot);
 *   - '?' matches exactly one character that is not a dot: "db-??.corp.example"
 *     matches "db-01.corp.example" but neither "db-1.corp.example" nor "db-a.b.corp...";
 *   - "**" is the same as "*" and is stored as one '*';
 *   - the last label must be literal (no wildcard, not all digits), so a pattern never
 *     spans top-level domains ("corp.*" and "*" are refused);
 *   - a pattern must hold at least one wildcard (otherwise it is a plain name).
 *
 * Specificity, used when several patterns match one name: more literal characters
 * (everything but '*' and '?', dots included) wins; then fewer '*'; then fewer '?'.
 * So "db-??.corp.example" beats "db-*.corp.example" (same literals, no '*').
 *
 * Ownership: callers pass output buffers of SP_RESOURCE_NAME_BUF bytes; nothing is
 * allocated. Pure functions, thread-safe.
 */
#ifndef SALLYPORT_SHARED_RESOURCE_NAME_H
#define SALLYPORT_SHARED_RESOURCE_NAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/error.h"

/* Longest name or pattern, without the optional trailing dot. */
#define SP_RESOURCE_NAME_MAX 253
/* Buffer for a normalised name or pattern, NUL included. */
#define SP_RESOURCE_NAME_BUF (SP_RESOURCE_NAME_MAX + 1)
/* Longest label. */
#define SP_RESOURCE_NAME_LABEL_MAX 63

/* How specific a pattern is; filled by sp_resource_name_parse_pattern. */
struct sp_resource_name_specificity {
	uint16_t literals;  /* characters other than '*' and '?' */
	uint16_t stars;	    /* count of '*' */
	uint16_t questions; /* count of '?' */
};

/*
 * Validates and normalises a host name into out (lower case, no trailing dot, NUL
 * terminated) and its length into *out_len (may be NULL). On failure out is "" and the
 * diag says what is wrong and where ("label 2 \"-db\" starts with a hyphen").
 * SP_ERR_INVALID for any malformed name.
 */
int sp_resource_name_normalize(const char *text, char out[SP_RESOURCE_NAME_BUF], size_t *out_len,
			       struct sp_diag *diag);

/*
 * The same for a wildcard pattern: validates, lower-cases, drops a trailing dot,
 * folds "**" into "*", and reports its specificity (may be NULL). A text without any
 * wildcard is SP_ERR_INVALID ("no wildcard; use it as a plain name").
 */
int sp_resource_name_parse_pattern(const char *text, char out[SP_RESOURCE_NAME_BUF],
				   size_t *out_len,
				   struct sp_resource_name_specificity *specificity,
				   struct sp_diag *diag);

/*
 * True when the normalised name (name_len bytes) matches the normalised pattern
 * (pattern_len bytes) by the rules above. Both must already be normalised (lower
 * case); the result for other input is false or a plain byte comparison, never a
 * crash. Time O(pattern_len * name_len) in the worst case, linear for typical patterns.
 */
bool sp_resource_name_pattern_matches(const char *pattern, size_t pattern_len, const char *name,
				      size_t name_len);

/*
 * Negative when pattern a is MORE specific than b, positive when less, 0 when equal
 * (a sort with this comparator puts the most specific first).
 */
int sp_resource_name_specificity_compare(const struct sp_resource_name_specificity *a,
					 const struct sp_resource_name_specificity *b);

/*
 * The bucket key of a normalised pattern: the whole labels after the last wildcard
 * ("*.corp.example" -> "corp.example", "db-*x.corp" -> "corp"). Every name the pattern
 * matches ends with "." plus this key. Sets *key_offset so the key is
 * pattern + *key_offset up to pattern_len; SP_ERR_INVALID when there is no such key.
 */
int sp_resource_name_pattern_key(const char *pattern, size_t pattern_len, size_t *key_offset);

#endif
