/*
 * shared/error.h — the one error convention of Sallyport.
 *
 * Every function that can fail returns 0 on success or a negative value from
 * enum sp_err. Callers test `r < 0` (or `r != 0`) and pass the code upwards; the
 * code is never reinterpreted as a count. Where a user needs to know *what* was
 * wrong (which config key, which claim, which field), the function also takes an
 * optional struct sp_diag and writes one human sentence into it.
 */
#ifndef SALLYPORT_SHARED_ERROR_H
#define SALLYPORT_SHARED_ERROR_H

#include <stddef.h>

enum sp_err {
	SP_OK = 0,
	SP_ERR_INTERNAL = -1,       /* a bug or an impossible state */
	SP_ERR_NOMEM = -2,          /* allocation failed */
	SP_ERR_INVALID = -3,        /* malformed input or a bad argument */
	SP_ERR_TRUNCATED = -4,      /* input ended before a complete item */
	SP_ERR_TOO_LARGE = -5,      /* a bound (size, count, length) would be exceeded */
	SP_ERR_NOT_FOUND = -6,      /* the thing asked for does not exist */
	SP_ERR_EXISTS = -7,         /* the thing to create already exists */
	SP_ERR_IO = -8,             /* a system call failed; errno was kept in the diag */
	SP_ERR_PERMISSION = -9,     /* file mode, owner or caller not allowed */
	SP_ERR_CRYPTO = -10,        /* the crypto library refused an operation */
	SP_ERR_BAD_SIGNATURE = -11, /* a signature did not verify */
	SP_ERR_BAD_ALGORITHM = -12, /* an algorithm other than the one expected */
	SP_ERR_EXPIRED = -13,       /* past exp (allowing skew) */
	SP_ERR_NOT_YET_VALID = -14, /* before nbf/iat (allowing skew) */
	SP_ERR_ISSUER = -15,        /* iss is not the expected issuer */
	SP_ERR_AUDIENCE = -16,      /* aud does not name us */
	SP_ERR_KEY_BINDING = -17,   /* cnf.jkt does not match the presenting key */
	SP_ERR_CLAIM = -18,         /* a required claim is missing or of the wrong type */
	SP_ERR_UNSUPPORTED = -19,   /* valid but not something this build handles */
	SP_ERR_VERSION = -20,       /* a version newer than this program understands */
	SP_ERR_DATABASE = -21,      /* the store failed */
	SP_ERR_TLS = -22,           /* a TLS handshake or record failed */
	SP_ERR_PEER_MISMATCH = -23, /* a pinned peer key did not match */
	SP_ERR_AGAIN = -24,         /* not an error: more input needed, call again */
};

/* A stable lower-case name for the code ("truncated"), for logs and JSON. */
const char *sp_err_name(int err);
/* A short English description ("input ended early"). Never NULL. */
const char *sp_strerror(int err);

/*
 * Detail for a person: which field, which line, which file. Owned by the caller,
 * usually on the stack. Functions write to it only on failure; a NULL diag is
 * allowed everywhere and means "the caller only wants the code".
 */
struct sp_diag {
	char message[256];
};

/* Formats into diag (when not NULL) and returns err, so `return sp_diag_set(...)` reads well. */
int sp_diag_set(struct sp_diag *diag, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * A copy of untrusted text fit for quoting in a diag: printable ASCII only (other bytes
 * and '"' become '?'), cut with "..." to fit out_size. Returns out.
 */
const char *sp_diag_echo(const char *text, size_t len, char *out, size_t out_size);

#endif
