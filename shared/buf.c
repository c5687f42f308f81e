/* shared/buf.c — see buf.h. */
#include "shared/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "shared/error.h"

#define SP_BUF_DEFAULT_MAX ((size_t)64 << 20)

void sp_buf_init(struct sp_buf *buf, size_t max)
{
	memset(buf, 0, sizeof(*buf));
	buf->max = max != 0 ? max : SP_BUF_DEFAULT_MAX;
}

void sp_buf_init_fixed(struct sp_buf *buf, void *storage, size_t size)
{
	memset(buf, 0, sizeof(*buf));
	buf->data = storage;
	buf->cap = size;
	buf->max = size;
	buf->fixed = 1;
}

void sp_buf_free(struct sp_buf *buf)
{
	if (buf == NULL)
		return;
	if (!buf->fixed)
		free(buf->data);
	memset(buf, 0, sizeof(*buf));
}

void sp_buf_free_secret(struct sp_buf *buf)
{
	if (buf == NULL)
		return;
	if (buf->data != NULL && buf->cap != 0)
		OPENSSL_cleanse(buf->data, buf->cap);
	sp_buf_free(buf);
}

void sp_buf_reset(struct sp_buf *buf)
{
	buf->len = 0;
}

int sp_buf_reserve(struct sp_buf *buf, size_t extra)
{
	if (extra > buf->max - buf->len)
		return SP_ERR_TOO_LARGE;
	size_t need = buf->len + extra;
	if (need <= buf->cap)
		return 0;
	if (buf->fixed)
		return SP_ERR_TOO_LARGE;
	size_t cap = buf->cap != 0 ? buf->cap : 64;
	while (cap < need)
		cap = cap > buf->max / 2 ? buf->max : cap * 2;
	uint8_t *grown = realloc(buf->data, cap);
	if (grown == NULL)
		return SP_ERR_NOMEM;
	buf->data = grown;
	buf->cap = cap;
	return 0;
}

int sp_buf_put(struct sp_buf *buf, const void *bytes, size_t n)
{
	if (n == 0)
		return 0;
	int r = sp_buf_reserve(buf, n);
	if (r < 0)
		return r;
	memcpy(buf->data + buf->len, bytes, n);
	buf->len += n;
	return 0;
}

int sp_buf_put_u8(struct sp_buf *buf, uint8_t v)
{
	return sp_buf_put(buf, &v, 1);
}

int sp_buf_put_u16be(struct sp_buf *buf, uint16_t v)
{
	uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	return sp_buf_put(buf, b, sizeof(b));
}

int sp_buf_put_u32be(struct sp_buf *buf, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	return sp_buf_put(buf, b, sizeof(b));
}

int sp_buf_put_u64be(struct sp_buf *buf, uint64_t v)
{
	int r = sp_buf_put_u32be(buf, (uint32_t)(v >> 32));
	if (r < 0)
		return r;
	r = sp_buf_put_u32be(buf, (uint32_t)v);
	if (r < 0)
		buf->len -= 4; /* keep "unchanged on failure" */
	return r;
}

int sp_buf_put_str(struct sp_buf *buf, const char *s)
{
	return sp_buf_put(buf, s, strlen(s));
}

int sp_buf_vprintf(struct sp_buf *buf, const char *fmt, va_list ap)
{
	va_list again;
	va_copy(again, ap);
	int n = vsnprintf(NULL, 0, fmt, ap);
	if (n < 0) {
		va_end(again);
		return SP_ERR_INVALID;
	}
	/* +1 for vsnprintf's NUL, which is not counted in len. */
	int r = sp_buf_reserve(buf, (size_t)n + 1);
	if (r == 0) {
		vsnprintf((char *)buf->data + buf->len, (size_t)n + 1, fmt, again);
		buf->len += (size_t)n;
	}
	va_end(again);
	return r;
}

int sp_buf_printf(struct sp_buf *buf, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = sp_buf_vprintf(buf, fmt, ap);
	va_end(ap);
	return r;
}

const char *sp_buf_cstr(struct sp_buf *buf)
{
	if (sp_buf_reserve(buf, 1) < 0)
		return NULL;
	buf->data[buf->len] = '\0';
	return (const char *)buf->data;
}

int sp_buf_patch_u16be(struct sp_buf *buf, size_t offset, uint16_t v)
{
	if (buf->len < 2 || offset > buf->len - 2)
		return SP_ERR_INVALID;
	buf->data[offset] = (uint8_t)(v >> 8);
	buf->data[offset + 1] = (uint8_t)v;
	return 0;
}

void sp_reader_init(struct sp_reader *r, const void *data, size_t len)
{
	r->data = data;
	r->len = data != NULL ? len : 0;
	r->pos = 0;
}

int sp_reader_view(struct sp_reader *r, size_t n, const uint8_t **out)
{
	*out = NULL;
	if (n > sp_reader_remaining(r))
		return SP_ERR_TRUNCATED;
	*out = r->data + r->pos;
	r->pos += n;
	return 0;
}

int sp_reader_copy(struct sp_reader *r, void *out, size_t n)
{
	const uint8_t *p;
	int rc = sp_reader_view(r, n, &p);
	if (rc < 0) {
		memset(out, 0, n);
		return rc;
	}
	if (n != 0)
		memcpy(out, p, n);
	return 0;
}

int sp_reader_skip(struct sp_reader *r, size_t n)
{
	const uint8_t *p;
	return sp_reader_view(r, n, &p);
}

int sp_reader_seek(struct sp_reader *r, size_t pos)
{
	if (pos > r->len)
		return SP_ERR_TRUNCATED;
	r->pos = pos;
	return 0;
}

int sp_reader_u8(struct sp_reader *r, uint8_t *out)
{
	*out = 0;
	if (sp_reader_remaining(r) < 1)
		return SP_ERR_TRUNCATED;
	*out = r->data[r->pos++];
	return 0;
}

int sp_reader_u16be(struct sp_reader *r, uint16_t *out)
{
	*out = 0;
	if (sp_reader_remaining(r) < 2)
		return SP_ERR_TRUNCATED;
	const uint8_t *p = r->data + r->pos;
	*out = (uint16_t)((unsigned)p[0] << 8 | p[1]);
	r->pos += 2;
	return 0;
}

int sp_reader_u32be(struct sp_reader *r, uint32_t *out)
{
	*out = 0;
	if (sp_reader_remaining(r) < 4)
		return SP_ERR_TRUNCATED;
	const uint8_t *p = r->data + r->pos;
	*out = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	r->pos += 4;
	return 0;
}

int sp_reader_u64be(struct sp_reader *r, uint64_t *out)
{
	*out = 0;
	if (sp_reader_remaining(r) < 8)
		return SP_ERR_TRUNCATED;
	uint32_t hi, lo;
	(void)sp_reader_u32be(r, &hi);
	(void)sp_reader_u32be(r, &lo);
	*out = (uint64_t)hi << 32 | lo;
	return 0;
}
