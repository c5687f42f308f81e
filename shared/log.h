/*
 * shared/log.h — structured logging: one line per event, text or JSON, never a secret.
 *
 * A log event is a level, a message and a list of typed fields. The pure core,
 * sp_log_format_line, turns an event into one line in an sp_buf and does no I/O: the
 * time is passed in. sp_log_write adds the level filter, reads the clock and writes the
 * line to the sink with a single write(). The programs set a process-wide default
 * logger once at start (sp_log_set_default) and then call sp_log / SP_LOG.
 *
 *   text: 2026-11-25T08:20:12.345Z INFO connector enrolled url=https://x key2="a b"
 *   json: {"ts":"2026-11-25T08:20:12.345Z","level":"info","msg":"connector enrolled",...}
 *
 * Secrets. A field made with SP_LOG_SECRET is always written as "[redacted]"; its value
 * is never read. As a second line of defence, any string value (and the message) that
 * looks like a credential is redacted the same way even when not marked:
 *   - a compact JWS/JWE: a run of base64url characters split by dots into 3 or 5 parts,
 *     whose first part starts with "eyJ" (the encoding of '{"', how every JOSE header
 *     begins) and has at least 8 characters, and whose last part has at least 16;
 *   - PEM armour: the text "-----BEGIN" or "PRIVATE KEY" anywhere in the value.
 * Hostnames and URLs do not match the JWS rule (no label begins "eyJ" and is followed by
 * two more dot-separated runs of that shape); a false positive only hides a value.
 *
 * Escaping. JSON strings escape '"', '\\' and every control character (DEL too); text
 * values are quoted when they are empty or contain a space, '"', '=', '\\' or a control
 * character, and escape '"', '\\' and control characters inside. Bytes that are not
 * valid UTF-8 (overlong forms, surrogates, values past U+10FFFF, stray continuation
 * bytes) are each replaced by U+FFFD, so every JSON line is valid UTF-8 JSON.
 *
 * Length. A line, newline included, is at most SP_LOG_LINE_MAX bytes: that is PIPE_BUF
 * on Linux, so a single write() of a whole line to a pipe is atomic and lines from
 * several threads or processes sharing the sink never interleave. A longer event is cut
 * at a character boundary; the line then ends with " [truncated]" (text) or carries
 * "truncated":true (JSON) and is still well formed.
 *
 * Numbers are plain JSON numbers; a UINT field above INT64_MAX stays a number, which
 * some readers (jansson without JSON_DECODE_INT_AS_REAL) refuse, so prefer INT for values
 * that fit.
 *
 * Field keys are written as given when they consist of [A-Za-z0-9_.-]; any other byte
 * becomes '_', keys are cut to 64 bytes, and a key equal to one of the line's own keys
 * (ts, level, program, msg, truncated) is written with a leading '_'.
 *
 * Ownership: fields and the strings they point to belong to the caller and are only read
 * during the call. The default logger holds a copy of its config (the program name is
 * copied too). sp_log_set_default is not thread-safe: call it before starting threads;
 * logging itself is safe from any thread.
 */
#ifndef SALLYPORT_SHARED_LOG_H
#define SALLYPORT_SHARED_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"
#include "shared/error.h"

/* Longest line written, newline included (PIPE_BUF, see above). */
#define SP_LOG_LINE_MAX 4096
/* Longest field key written; longer keys are cut. */
#define SP_LOG_KEY_MAX 64
/* Longest program name kept by the logger; longer names are cut. */
#define SP_LOG_PROGRAM_MAX 64
/* What a secret or credential-looking value is written as. */
#define SP_LOG_REDACTED "[redacted]"

enum sp_log_level {
	SP_LOG_DEBUG = 0,
	SP_LOG_INFO = 1,
	SP_LOG_WARN = 2,
	SP_LOG_ERROR = 3,
};

enum sp_log_format {
	SP_LOG_TEXT = 0,
	SP_LOG_JSON = 1,
};

/* The level and format names, NULL-terminated, in enum order (for config enum keys). */
extern const char *const sp_log_level_names[];
extern const char *const sp_log_format_names[];

enum sp_log_field_type {
	SP_LOG_FIELD_STR = 0,
	SP_LOG_FIELD_INT = 1,
	SP_LOG_FIELD_UINT = 2,
	SP_LOG_FIELD_BOOL = 3,
};

/* A string length meaning "up to the terminating NUL". */
#define SP_LOG_NUL_TERMINATED SIZE_MAX

/*
 * One key/value pair of an event. Build them with the SP_LOG_* macros below. A NULL
 * str is written as JSON null (text: null). `secret` makes the value "[redacted]"
 * whatever its type, without reading it.
 */
struct sp_log_field {
	const char *key;
	enum sp_log_field_type type;
	int secret;
	const char *str; /* SP_LOG_FIELD_STR */
	size_t len;	 /* bytes at str, or SP_LOG_NUL_TERMINATED */
	int64_t i;	 /* SP_LOG_FIELD_INT, and BOOL (0 or 1) */
	uint64_t u;	 /* SP_LOG_FIELD_UINT */
};

#define SP_LOG_STR(k, v)                                                                           \
	((struct sp_log_field){                                                                    \
	    .key = (k), .type = SP_LOG_FIELD_STR, .str = (v), .len = SP_LOG_NUL_TERMINATED})
/* n bytes at v, which may hold NULs or anything else: they are escaped. */
#define SP_LOG_STRN(k, v, n)                                                                       \
	((struct sp_log_field){.key = (k), .type = SP_LOG_FIELD_STR, .str = (v), .len = (n)})
#define SP_LOG_INT(k, v)                                                                           \
	((struct sp_log_field){.key = (k), .type = SP_LOG_FIELD_INT, .i = (int64_t)(v)})
#define SP_LOG_UINT(k, v)                                                                          \
	((struct sp_log_field){.key = (k), .type = SP_LOG_FIELD_UINT, .u = (uint64_t)(v)})
#define SP_LOG_BOOL(k, v)                                                                          \
	((struct sp_log_field){.key = (k), .type = SP_LOG_FIELD_BOOL, .i = (v) ? 1 : 0})
/* A value that must never be written: the line shows [redacted] in its place. */
#define SP_LOG_SECRET(k, v)                                                                        \
	((struct sp_log_field){.key = (k),                                                         \
			       .type = SP_LOG_FIELD_STR,                                           \
			       .secret = 1,                                                        \
			       .str = (v),                                                         \
			       .len = SP_LOG_NUL_TERMINATED})
/* error=<sp_err_name(err)>, e.g. error=truncated. */
#define SP_LOG_ERR(err) SP_LOG_STR("error", sp_err_name(err))

/*
 * Where and how to log. Owned by the caller; sp_log_set_default copies it.
 * clock_ms returns milliseconds since the Unix epoch (NULL: the real-time clock); tests
 * pass a fixed clock. program, when not NULL or empty, is written on every line.
 */
struct sp_log_config {
	enum sp_log_level level; /* events below this level are dropped */
	enum sp_log_format format;
	int fd; /* the sink, e.g. STDERR_FILENO */
	int64_t (*clock_ms)(void);
	const char *program;
};

/*
 * Parses "debug", "info", "warn" or "error" (ASCII case ignored). On failure *out is
 * SP_LOG_DEBUG, the result is SP_ERR_INVALID and diag names the bad value.
 */
int sp_log_level_parse(const char *name, enum sp_log_level *out, struct sp_diag *diag);
/* Parses "text" or "json" (ASCII case ignored); like sp_log_level_parse. */
int sp_log_format_parse(const char *name, enum sp_log_format *out, struct sp_diag *diag);
/* "debug", "info", ... ; "unknown" for a value outside the enum. Never NULL. */
const char *sp_log_level_name(enum sp_log_level level);
/* "text" or "json"; "unknown" otherwise. Never NULL. */
const char *sp_log_format_name(enum sp_log_format format);

/*
 * The pure core: appends one complete line for the event, newline included, to `out`,
 * in cfg->format with cfg->program, stamped with now_ms. The level filter is not
 * applied here. The line is at most SP_LOG_LINE_MAX bytes and at most the room left in
 * `out` (it is truncated to fit, with the marker). Returns 0; SP_ERR_INVALID for a level
 * or format outside the enums or a NULL message; SP_ERR_TOO_LARGE when `out` has less
 * than 256 bytes of room; SP_ERR_NOMEM. On failure `out` is as it was.
 */
int sp_log_format_line(const struct sp_log_config *cfg, int64_t now_ms, enum sp_log_level level,
		       const char *msg, const struct sp_log_field *fields, size_t count,
		       struct sp_buf *out);

/*
 * Formats the event with cfg's clock and writes it to cfg->fd with one write() (retried
 * on EINTR; a short write is completed). Events below cfg->level are dropped (returns
 * 0). Returns 0, SP_ERR_INVALID (bad level or format) or SP_ERR_IO.
 */
int sp_log_write(const struct sp_log_config *cfg, enum sp_log_level level, const char *msg,
		 const struct sp_log_field *fields, size_t count);

/*
 * Replaces the process-wide logger's config with a copy of *cfg (program name copied,
 * cut to SP_LOG_PROGRAM_MAX bytes). Until called the default is: info, text, fd 2,
 * real-time clock, no program name. Not thread-safe; call once at start.
 */
void sp_log_set_default(const struct sp_log_config *cfg);
/* The default logger's config (its program points into the logger's own copy). */
const struct sp_log_config *sp_log_default(void);
/* 1 when an event at `level` would be written by the default logger. */
int sp_log_enabled(enum sp_log_level level);
/* Logs through the default logger. Errors are dropped: logging never fails a caller. */
void sp_log(enum sp_log_level level, const char *msg, const struct sp_log_field *fields,
	    size_t count);

/*
 * SP_LOG(level, msg, field, ...) — at least one field:
 *   SP_LOG(SP_LOG_INFO, "listening", SP_LOG_STR("addr", a), SP_LOG_INT("port", p));
 * SP_LOG_MSG(level, msg) — no fields.
 * The fields are a compound literal on the caller's stack; sizeof counts them without
 * evaluating them twice.
 */
#define SP_LOG(level, msg, ...)                                                                    \
	sp_log((level), (msg), (const struct sp_log_field[]){__VA_ARGS__},                         \
	       sizeof((const struct sp_log_field[]){__VA_ARGS__}) / sizeof(struct sp_log_field))
#define SP_LOG_MSG(level, msg) sp_log((level), (msg), NULL, 0)

#endif
