/* shared/log.c — see log.h. */
#include "shared/log.h"
#include "shared/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *const sp_log_level_names[] = {"debug", "info", "warn", "error", NULL};
const char *const sp_log_format_names[] = {"text", "json", NULL};

static const char *const level_names_upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};

/* Room kept back while writing content, for the closing quote, marker and newline. */
#define LINE_RESERVE 32
/* Smallest room in the output buffer that sp_log_format_line accepts. */
#define LINE_MIN_ROOM 256

/* ---- names ------------------------------------------------------------------ */

static int ascii_equal_nocase(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char ca = (unsigned char)*a, cb = (unsigned char)*b;
		if (ca >= 'A' && ca <= 'Z')
			ca = (unsigned char)(ca - 'A' + 'a');
		if (cb >= 'A' && cb <= 'Z')
			cb = (unsigned char)(cb - 'A' + 'a');
		if (ca != cb)
			return 0;
		if (ca == '\0')
			return 1;
	}
}

static int name_index(const char *const *names, const char *name)
{
	for (int i = 0; names[i] != NULL; i++)
		if (ascii_equal_nocase(names[i], name))
			return i;
	return -1;
}

int sp_log_level_parse(const char *name, enum sp_log_level *out, struct sp_diag *diag)
{
	*out = SP_LOG_DEBUG;
	int i = name != NULL ? name_index(sp_log_level_names, name) : -1;
	if (i < 0)
		return sp_diag_set(
		    diag, SP_ERR_INVALID,
		    "unknown log level \"%.64s\" (expected debug, info, warn or error)",
		    name != NULL ? name : "");
	*out = (enum sp_log_level)i;
	return 0;
}

int sp_log_format_parse(const char *name, enum sp_log_format *out, struct sp_diag *diag)
{
	*out = SP_LOG_TEXT;
	int i = name != NULL ? name_index(sp_log_format_names, name) : -1;
	if (i < 0)
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "unknown log format \"%.64s\" (expected text or json)",
				   name != NULL ? name : "");
	*out = (enum sp_log_format)i;
	return 0;
}

static int level_valid(enum sp_log_level level)
{
	return level >= SP_LOG_DEBUG && level <= SP_LOG_ERROR;
}

const char *sp_log_level_name(enum sp_log_level level)
{
	return level_valid(level) ? sp_log_level_names[level] : "unknown";
}

const char *sp_log_format_name(enum sp_log_format format)
{
	return format == SP_LOG_TEXT || format == SP_LOG_JSON ? sp_log_format_names[format]
							      : "unknown";
}

/* ---- bytes: UTF-8 and credential shapes -------------------------------------- */

/*
 * Length (1-4) of the valid UTF-8 sequence at p, or 0 when p does not start one:
 * overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid.
 */
static size_t utf8_sequence_length(const uint8_t *p, size_t n)
{
	uint8_t b0 = p[0];
	if (b0 < 0x80)
		return 1;
	size_t want;
	uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
	if (b0 >= 0xc2 && b0 <= 0xdf) {
		want = 2;
	} else if (b0 >= 0xe0 && b0 <= 0xef) {
		want = 3;
		if (b0 == 0xe0)
			lo = 0xa0; /* overlong */
		else if (b0 == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (b0 >= 0xf0 && b0 <= 0xf4) {
		want = 4;
		if (b0 == 0xf0)
			lo = 0x90; /* overlong */
		else if (b0 == 0xf4)
			hi = 0x8f; /* past U+10FFFF */
	} else {
		return 0;
	}
	if (n < want || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < want; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return want;
}

static int is_base64url(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* Length of the base64url run at p (stops at a dot or any other byte). */
static size_t base64url_run(const uint8_t *p, size_t n)
{
	size_t i = 0;
	while (i < n && is_base64url(p[i]))
		i++;
	return i;
}

/*
 * Does the part starting at p (a run of base64url characters) begin a compact JWS (3
 * parts) or JWE (5 parts) by the rule in log.h?
 */
static int jose_starts_at(const uint8_t *p, size_t n)
{
	if (n < 8 || memcmp(p, "eyJ", 3) != 0)
		return 0;
	size_t first = base64url_run(p, n);
	if (first < 8)
		return 0;
	size_t pos = first;
	for (int part = 2; part <= 5; part++) {
		if (pos >= n || p[pos] != '.')
			return 0;
		pos++;
		size_t len = base64url_run(p + pos, n - pos);
		if ((part == 3 || part == 5) && len >= 16)
			return 1;
		pos += len;
	}
	return 0;
}

static int contains(const uint8_t *p, size_t n, const char *needle)
{
	return memmem(p, n, needle, strlen(needle)) != NULL;
}

/* 1 when the value must be redacted although it was not marked secret. */
static int looks_like_credential(const uint8_t *p, size_t n)
{
	if (contains(p, n, "-----BEGIN") || contains(p, n, "PRIVATE KEY"))
		return 1;
	for (size_t i = 0; i + 3 <= n; i++) {
		/* A candidate starts a base64url part: at the start or after a non-base64url byte.
		 */
		if (p[i] != 'e' || (i > 0 && is_base64url(p[i - 1])))
			continue;
		if (jose_starts_at(p + i, n - i))
			return 1;
	}
	return 0;
}

/* ---- the line writer ----------------------------------------------------------- */

/*
 * Appends pieces to `out` while keeping LINE_RESERVE bytes back. The first piece that
 * does not fit sets `truncated` and every later ordinary piece is dropped; closing
 * pieces (quotes, marker, newline) are written with line_close into the reserve.
 */
struct line {
	struct sp_buf *out;
	size_t limit; /* out->len may not pass this with ordinary pieces */
	int truncated;
	int err;
};

static void line_put(struct line *l, const void *p, size_t n)
{
	if (l->truncated || l->err != 0)
		return;
	/* A closing piece may already have taken len past limit: no unsigned wrap here. */
	if (l->out->len > l->limit || n > l->limit - l->out->len) {
		l->truncated = 1;
		return;
	}
	int r = sp_buf_put(l->out, p, n);
	if (r < 0)
		l->err = r;
}

static void line_put_str(struct line *l, const char *s)
{
	line_put(l, s, strlen(s));
}

static void line_close(struct line *l, const char *s)
{
	if (l->err != 0)
		return;
	int r = sp_buf_put_str(l->out, s);
	if (r < 0)
		l->err = r;
}

/* The byte string of a field or message after NULL handling. */
struct bytes {
	const uint8_t *p;
	size_t n;
};

static const char replacement_char[] = "\xef\xbf\xbd"; /* U+FFFD */

/* The short escape of a control character, or NULL when it has none (JSON adds \b \f). */
static const char *named_escape(uint8_t c, int json)
{
	switch (c) {
	case '\n':
		return "\\n";
	case '\r':
		return "\\r";
	case '\t':
		return "\\t";
	case '\b':
		return json ? "\\b" : NULL;
	case '\f':
		return json ? "\\f" : NULL;
	default:
		return NULL;
	}
}

/*
 * Escaped content, one unit per put, U+FFFD for invalid UTF-8. JSON (RFC 8259): '"', '\\'
 * and control characters as \uXXXX or their short forms. Text: '\\', control characters
 * as \xXX or \n \r \t, and '"' only inside quotes.
 */
static void put_escaped(struct line *l, struct bytes b, int json, int quoted)
{
	size_t i = 0;
	while (i < b.n && !l->truncated && l->err == 0) {
		uint8_t c = b.p[i];
		char esc[8];
		if (c == '\\' || (c == '"' && (json || quoted))) {
			esc[0] = '\\';
			esc[1] = (char)c;
			line_put(l, esc, 2);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			const char *named = named_escape(c, json);
			if (named != NULL) {
				line_put_str(l, named);
			} else if (json) {
				snprintf(esc, sizeof(esc), "\\u%04x", (unsigned)c);
				line_put(l, esc, 6);
			} else {
				snprintf(esc, sizeof(esc), "\\x%02x", (unsigned)c);
				line_put(l, esc, 4);
			}
			i++;
		} else {
			size_t seq = utf8_sequence_length(b.p + i, b.n - i);
			if (seq == 0) {
				line_put(l, replacement_char, 3);
				i++;
			} else {
				line_put(l, b.p + i, seq);
				i += seq;
			}
		}
	}
}

static void json_put_content(struct line *l, struct bytes b)
{
	put_escaped(l, b, 1, 1);
}

static void text_put_content(struct line *l, struct bytes b, int quoted)
{
	put_escaped(l, b, 0, quoted);
}

/* 1 when a text value must be quoted (see log.h). */
static int text_needs_quotes(struct bytes b)
{
	if (b.n == 0)
		return 1;
	for (size_t i = 0; i < b.n; i++) {
		uint8_t c = b.p[i];
		if (c <= ' ' || c == 0x7f || c == '"' || c == '=' || c == '\\')
			return 1;
	}
	return 0;
}

/* ---- pieces of a line ------------------------------------------------------------- */

static const char *const reserved_keys[] = {"ts", "level", "program", "msg", "truncated", NULL};

/* Writes the sanitised key (see log.h) into key_out (SP_LOG_KEY_MAX + 2 bytes). */
static void sanitise_key(const char *key, char *key_out)
{
	size_t n = 0;
	if (key == NULL || key[0] == '\0') {
		key_out[n++] = '_';
	} else {
		for (int i = 0; reserved_keys[i] != NULL; i++)
			if (strcmp(key, reserved_keys[i]) == 0)
				key_out[n++] = '_';
		for (size_t i = 0; key[i] != '\0' && n < SP_LOG_KEY_MAX; i++) {
			uint8_t c = (uint8_t)key[i];
			int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
				 (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
			key_out[n++] = ok ? (char)c : '_';
		}
	}
	key_out[n] = '\0';
}

/* The value a string field shows: NULL for a NULL string, else its bytes or the mask. */
static int field_text(const struct sp_log_field *f, struct bytes *out)
{
	if (f->secret) {
		out->p = (const uint8_t *)SP_LOG_REDACTED;
		out->n = strlen(SP_LOG_REDACTED);
		return 1;
	}
	if (f->str == NULL)
		return 0;
	size_t n = f->len == SP_LOG_NUL_TERMINATED ? strlen(f->str) : f->len;
	out->p = (const uint8_t *)f->str;
	out->n = n;
	if (looks_like_credential(out->p, out->n)) {
		out->p = (const uint8_t *)SP_LOG_REDACTED;
		out->n = strlen(SP_LOG_REDACTED);
	}
	return 1;
}

/* Scalar fields (numbers, booleans, null) as text, into buf (>= 24 bytes). */
static const char *field_scalar(const struct sp_log_field *f, char *buf, size_t size)
{
	switch (f->type) {
	case SP_LOG_FIELD_INT:
		snprintf(buf, size, "%" PRId64, f->i);
		return buf;
	case SP_LOG_FIELD_UINT:
		snprintf(buf, size, "%" PRIu64, f->u);
		return buf;
	case SP_LOG_FIELD_BOOL:
		return f->i != 0 ? "true" : "false";
	default:
		return "null";
	}
}

static void json_field(struct line *l, const struct sp_log_field *f)
{
	char key[SP_LOG_KEY_MAX + 2];
	char piece[SP_LOG_KEY_MAX + 48];
	char scalar[32];
	struct bytes text;
	sanitise_key(f->key, key);
	int is_text = f->secret || f->type == SP_LOG_FIELD_STR;
	if (is_text && field_text(f, &text)) {
		/* Key and opening quote in one piece, so a cut never leaves a bare key. */
		snprintf(piece, sizeof(piece), ",\"%s\":\"", key);
		line_put_str(l, piece);
		if (l->truncated)
			return;
		json_put_content(l, text);
		line_close(l, "\"");
		return;
	}
	snprintf(piece, sizeof(piece), ",\"%s\":%s", key,
		 is_text ? "null" : field_scalar(f, scalar, sizeof(scalar)));
	line_put_str(l, piece);
}

static void text_field(struct line *l, const struct sp_log_field *f)
{
	char key[SP_LOG_KEY_MAX + 2];
	char piece[SP_LOG_KEY_MAX + 48];
	char scalar[32];
	struct bytes text;
	sanitise_key(f->key, key);
	int is_text = f->secret || f->type == SP_LOG_FIELD_STR;
	if (is_text && field_text(f, &text)) {
		int quoted = text_needs_quotes(text);
		snprintf(piece, sizeof(piece), " %s=%s", key, quoted ? "\"" : "");
		line_put_str(l, piece);
		if (l->truncated)
			return;
		text_put_content(l, text, quoted);
		if (quoted)
			line_close(l, "\"");
		return;
	}
	snprintf(piece, sizeof(piece), " %s=%s", key,
		 is_text ? "null" : field_scalar(f, scalar, sizeof(scalar)));
	line_put_str(l, piece);
}

/* 2026-11-25T08:20:12.345Z; times outside years 0000-9999 are clamped. */
static void format_timestamp(int64_t now_ms, char out[80])
{
	const int64_t max_ms = 253402300799999; /* 9999-12-31T23:59:59.999Z */
	if (now_ms < -62167219200000)		/* 0000-01-01T00:00:00.000Z */
		now_ms = -62167219200000;
	if (now_ms > max_ms)
		now_ms = max_ms;
	int64_t seconds = now_ms / 1000, millis = now_ms % 1000;
	if (millis < 0) {
		millis += 1000;
		seconds -= 1;
	}
	time_t t = (time_t)seconds;
	struct tm tm;
	if (gmtime_r(&t, &tm) == NULL) {
		snprintf(out, 80, "1970-01-01T00:00:00.000Z");
		return;
	}
	snprintf(out, 80, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)millis);
}

static struct bytes message_bytes(const char *msg)
{
	struct bytes b = {(const uint8_t *)msg, strlen(msg)};
	if (looks_like_credential(b.p, b.n)) {
		b.p = (const uint8_t *)SP_LOG_REDACTED;
		b.n = strlen(SP_LOG_REDACTED);
	}
	return b;
}

static struct bytes program_bytes(const char *program)
{
	struct bytes b = {NULL, 0};
	if (program != NULL) {
		b.p = (const uint8_t *)program;
		b.n = strnlen(program, SP_LOG_PROGRAM_MAX);
	}
	return b;
}

int sp_log_format_line(const struct sp_log_config *cfg, int64_t now_ms, enum sp_log_level level,
		       const char *msg, const struct sp_log_field *fields, size_t count,
		       struct sp_buf *out)
{
	if (!level_valid(level) || msg == NULL ||
	    (cfg->format != SP_LOG_TEXT && cfg->format != SP_LOG_JSON) ||
	    (fields == NULL && count != 0))
		return SP_ERR_INVALID;
	size_t start = out->len;
	size_t room = out->max - out->len;
	if (room < LINE_MIN_ROOM)
		return SP_ERR_TOO_LARGE;
	if (room > SP_LOG_LINE_MAX)
		room = SP_LOG_LINE_MAX;
	struct line l = {out, start + room - LINE_RESERVE, 0, 0};
	char ts[80];
	format_timestamp(now_ms, ts);
	struct bytes program = program_bytes(cfg->program);
	struct bytes text = message_bytes(msg);

	if (cfg->format == SP_LOG_JSON) {
		line_put_str(&l, "{\"ts\":\"");
		line_put_str(&l, ts);
		line_put_str(&l, "\",\"level\":\"");
		line_put_str(&l, sp_log_level_names[level]);
		if (program.n != 0) {
			line_put_str(&l, "\",\"program\":\"");
			json_put_content(&l, program);
		}
		line_put_str(&l, "\",\"msg\":\"");
		json_put_content(&l, text);
		line_close(&l, "\"");
		for (size_t i = 0; i < count && !l.truncated; i++)
			json_field(&l, &fields[i]);
		if (l.truncated)
			line_close(&l, ",\"truncated\":true");
		line_close(&l, "}\n");
	} else {
		line_put_str(&l, ts);
		line_put_str(&l, " ");
		line_put_str(&l, level_names_upper[level]);
		line_put_str(&l, " ");
		if (program.n != 0) {
			text_put_content(&l, program, 0);
			line_put_str(&l, ": ");
		}
		text_put_content(&l, text, 0);
		for (size_t i = 0; i < count && !l.truncated; i++)
			text_field(&l, &fields[i]);
		if (l.truncated)
			line_close(&l, " [truncated]");
		line_close(&l, "\n");
	}
	if (l.err != 0) {
		out->len = start;
		return l.err;
	}
	return 0;
}

/* ---- writing ---------------------------------------------------------------------- */


int sp_log_write(const struct sp_log_config *cfg, enum sp_log_level level, const char *msg,
		 const struct sp_log_field *fields, size_t count)
{
	if (!level_valid(level))
		return SP_ERR_INVALID;
	if (level < cfg->level)
		return 0;
	uint8_t storage[SP_LOG_LINE_MAX];
	struct sp_buf line;
	sp_buf_init_fixed(&line, storage, sizeof(storage));
	int64_t now = cfg->clock_ms != NULL ? cfg->clock_ms() : sp_realtime_ms();
	int r = sp_log_format_line(cfg, now, level, msg, fields, count, &line);
	if (r < 0)
		return r;
	size_t done = 0;
	while (done < line.len) {
		ssize_t n = write(cfg->fd, storage + done, line.len - done);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 || n == 0)
			return SP_ERR_IO;
		done += (size_t)n;
	}
	return 0;
}

/* ---- the default logger --------------------------------------------------------- */

static char default_program[SP_LOG_PROGRAM_MAX + 1];
static struct sp_log_config default_config = {
    .level = SP_LOG_INFO,
    .format = SP_LOG_TEXT,
    .fd = STDERR_FILENO,
    .clock_ms = NULL,
    .program = NULL,
};

void sp_log_set_default(const struct sp_log_config *cfg)
{
	default_config = *cfg;
	if (cfg->program != NULL && cfg->program[0] != '\0') {
		size_t n = strnlen(cfg->program, SP_LOG_PROGRAM_MAX);
		memcpy(default_program, cfg->program, n);
		default_program[n] = '\0';
		default_config.program = default_program;
	} else {
		default_config.program = NULL;
	}
}

const struct sp_log_config *sp_log_default(void)
{
	return &default_config;
}

int sp_log_enabled(enum sp_log_level level)
{
	return level_valid(level) && level >= default_config.level;
}

void sp_log(enum sp_log_level level, const char *msg, const struct sp_log_field *fields,
	    size_t count)
{
	(void)sp_log_write(&default_config, level, msg, fields, count);
}
