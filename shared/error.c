/* shared/error.c — names and descriptions for enum sp_err. */
#include "shared/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct err_text {
	const char *name;
	const char *text;
};

/* Indexed by -err. */
static const struct err_text err_texts[] = {
	[0] = {"ok", "success"},
	[1] = {"internal", "internal error"},
	[2] = {"no_memory", "out of memory"},
	[3] = {"invalid", "invalid input"},
	[4] = {"truncated", "input ended early"},
	[5] = {"too_large", "size limit exceeded"},
	[6] = {"not_found", "not found"},
	[7] = {"exists", "already exists"},
	[8] = {"io", "input/output error"},
	[9] = {"permission", "permission denied"},
	[10] = {"crypto", "cryptographic operation failed"},
	[11] = {"bad_signature", "signature does not verify"},
	[12] = {"bad_algorithm", "algorithm not allowed"},
	[13] = {"expired", "expired"},
	[14] = {"not_yet_valid", "not yet valid"},
	[15] = {"issuer", "wrong issuer"},
	[16] = {"audience", "wrong audience"},
	[17] = {"key_binding", "key binding does not match"},
	[18] = {"claim", "missing or malformed claim"},
	[19] = {"unsupported", "not supported"},
	[20] = {"version", "unsupported version"},
	[21] = {"database", "database error"},
	[22] = {"tls", "TLS failure"},
	[23] = {"peer_mismatch", "peer key does not match the pinned key"},
	[24] = {"again", "more input needed"},
};

static const struct err_text *err_lookup(int err)
{
	if (err > 0 || -(long)err >= (long)(sizeof(err_texts) / sizeof(err_texts[0])))
		return NULL;
	return &err_texts[-err];
}

const char *sp_err_name(int err)
{
	const struct err_text *t = err_lookup(err);
	return t != NULL ? t->name : "unknown";
}

const char *sp_strerror(int err)
{
	const struct err_text *t = err_lookup(err);
	return t != NULL ? t->text : "unknown error";
}

int sp_diag_set(struct sp_diag *diag, int err, const char *fmt, ...)
{
	if (diag != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(diag->message, sizeof(diag->message), fmt, ap);
		va_end(ap);
	}
	return err;
}

const char *sp_diag_echo(const char *text, size_t len, char *out, size_t out_size)
{
	if (out_size == 0)
		return out;
	if (out_size < 4) {
		out[0] = '\0';
		return out;
	}
	size_t room = out_size - 1;
	size_t n = len <= room ? len : room - 3;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)text[i];
		out[i] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
	}
	if (n < len) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}
