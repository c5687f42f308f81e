/*
 * shared/buf.h — bounded byte buffers and the one checked reader for untrusted bytes.
 *
 * struct sp_buf is an append-only output buffer with a hard maximum size. It either
 * owns heap memory (sp_buf_init) that grows up to `max`, or writes into storage the
 * caller provides (sp_buf_init_fixed) and never allocates: the hot paths (DNS
 * answers, frame headers) use the fixed form. An append that would pass the limit
 * fails with SP_ERR_TOO_LARGE and leaves the buffer exactly as it was.
 *
 * struct sp_reader is a cursor over bytes someone else owns. Every read checks the
 * remaining length first; a short read returns SP_ERR_TRUNCATED, zeroes the output
 * and does not move the cursor. Multi-byte integers are read byte by byte (no casts
 * of packet memory to wider types), so alignment never matters.
 *
 * Ownership: the caller owns both structs (usually on the stack or inside another
 * struct). sp_buf_free releases heap memory of an owning buffer and is safe on a
 * zeroed or already-freed struct. Neither type is thread-safe.
 */
#ifndef SALLYPORT_SHARED_BUF_H
#define SALLYPORT_SHARED_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct sp_buf {
	uint8_t *data;
	size_t len;   /* bytes written */
	size_t cap;   /* bytes available at data */
	size_t max;   /* never grows past this */
	int fixed;    /* storage is the caller's; never realloc or free */
};

/* An empty owning buffer that may grow to max bytes (0 means 64 MiB). No allocation yet. */
void sp_buf_init(struct sp_buf *buf, size_t max);
/* A buffer over caller storage of `size` bytes; it never grows. */
void sp_buf_init_fixed(struct sp_buf *buf, void *storage, size_t size);
/* Frees owned memory (wiping nothing; see sp_buf_free_secret) and zeroes the struct. */
void sp_buf_free(struct sp_buf *buf);
/* Like sp_buf_free but wipes the bytes first: for keys, tokens and passwords. */
void sp_buf_free_secret(struct sp_buf *buf);
/* Forgets the contents, keeps the memory. */
void sp_buf_reset(struct sp_buf *buf);

/* Makes room for `extra` more bytes. 0, SP_ERR_TOO_LARGE or SP_ERR_NOMEM. */
int sp_buf_reserve(struct sp_buf *buf, size_t extra);
int sp_buf_put(struct sp_buf *buf, const void *bytes, size_t n);
int sp_buf_put_u8(struct sp_buf *buf, uint8_t v);
int sp_buf_put_u16be(struct sp_buf *buf, uint16_t v);
int sp_buf_put_u32be(struct sp_buf *buf, uint32_t v);
int sp_buf_put_u64be(struct sp_buf *buf, uint64_t v);
int sp_buf_put_str(struct sp_buf *buf, const char *s);
/* Appends formatted text (no terminating NUL is counted in len). */
int sp_buf_printf(struct sp_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int sp_buf_vprintf(struct sp_buf *buf, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/*
 * Writes a NUL after the contents (not counted in len) and returns the text, or NULL
 * when there is no room for it. For buffers that hold text.
 */
const char *sp_buf_cstr(struct sp_buf *buf);
/* Overwrites 2 bytes at `offset` (< len - 1): for length fields written after the body. */
int sp_buf_patch_u16be(struct sp_buf *buf, size_t offset, uint16_t v);

struct sp_reader {
	const uint8_t *data;
	size_t len;
	size_t pos;
};

void sp_reader_init(struct sp_reader *r, const void *data, size_t len);

static inline size_t sp_reader_remaining(const struct sp_reader *r)
{
	return r->len - r->pos;
}

int sp_reader_u8(struct sp_reader *r, uint8_t *out);
int sp_reader_u16be(struct sp_reader *r, uint16_t *out);
int sp_reader_u32be(struct sp_reader *r, uint32_t *out);
int sp_reader_u64be(struct sp_reader *r, uint64_t *out);
/* Copies n bytes out. */
int sp_reader_copy(struct sp_reader *r, void *out, size_t n);
/* Points *out at the next n bytes without copying and consumes them. */
int sp_reader_view(struct sp_reader *r, size_t n, const uint8_t **out);
int sp_reader_skip(struct sp_reader *r, size_t n);
/* Moves the cursor to an absolute offset <= len (for DNS compression pointers). */
int sp_reader_seek(struct sp_reader *r, size_t pos);

#endif
