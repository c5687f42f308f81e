/*
 * tests/fuzz/fuzz_log.c — log line formatting on arbitrary messages, keys and values.
 *
 * Input: byte 0 picks format (bit 0), level (bits 1-2), a program name (bit 3) and the
 * room in the output buffer (bits 4-7). Then a NUL-terminated message, then records
 * [type][key length][key][value length: 2 bytes][value] until the input ends.
 * Every line must: fit the room and SP_LOG_LINE_MAX; end with its only newline; hold no
 * raw control character; be valid UTF-8; in JSON, parse back with jansson as one object
 * with ts, level and msg; never contain the secret field's value.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "shared/buf.h"
#include "shared/error.h"
#include "shared/log.h"

#define MAX_FIELDS 32
static const char sentinel[] = "SENTINEL-secret-9c1e";

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_log: %s\n", what);
		abort();
	}
}

static int64_t fuzz_clock(void)
{
	return 1795594812345;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t control = data[0];
	struct sp_log_config cfg = {
	    .level = SP_LOG_DEBUG,
	    .format = (control & 1) ? SP_LOG_JSON : SP_LOG_TEXT,
	    .fd = -1,
	    .clock_ms = fuzz_clock,
	    .program = (control & 8) ? "sallyport-\xff\n\"test\"" : NULL,
	};
	enum sp_log_level level = (enum sp_log_level)((control >> 1) & 3);
	size_t room = 256 + (size_t)(control >> 4) * 300;

	/* Message: up to the first NUL. */
	size_t pos = 1;
	const uint8_t *nul = memchr(data + pos, 0, size - pos);
	size_t msg_len = nul != NULL ? (size_t)(nul - (data + pos)) : size - pos;
	char *msg = malloc(msg_len + 1);
	check(msg != NULL, "out of memory");
	memcpy(msg, data + pos, msg_len);
	msg[msg_len] = '\0';
	pos += msg_len + (nul != NULL ? 1 : 0);

	struct sp_log_field fields[MAX_FIELDS + 1];
	char keys[MAX_FIELDS][256];
	size_t count = 0;
	while (count < MAX_FIELDS && size - pos >= 2) {
		uint8_t type = data[pos];
		size_t key_len = data[pos + 1];
		pos += 2;
		if (key_len > size - pos)
			key_len = size - pos;
		memcpy(keys[count], data + pos, key_len);
		keys[count][key_len] = '\0';
		pos += key_len;
		size_t value_len = 0;
		if (size - pos >= 2) {
			value_len = (size_t)data[pos] << 8 | data[pos + 1];
			pos += 2;
		}
		if (value_len > size - pos)
			value_len = size - pos;
		const char *value = (const char *)data + pos;
		pos += value_len;
		struct sp_log_field *f = &fields[count];
		switch (type % 6) {
		case 0:
			*f = SP_LOG_STRN(keys[count], value, value_len);
			break;
		case 1:
			*f = SP_LOG_STR(keys[count], value_len > 0 ? NULL : "");
			break;
		case 2:
			*f = SP_LOG_INT(keys[count], (int64_t)value_len - (int64_t)type * 1000);
			break;
		case 3:
			*f = SP_LOG_UINT(keys[count], UINT64_MAX - value_len);
			break;
		case 4:
			*f = SP_LOG_BOOL(keys[count], value_len & 1);
			break;
		default:
			*f = SP_LOG_STRN(keys[count], value, value_len);
			f->type = (enum sp_log_field_type)(type % 7);
			f->secret = 1;
			break;
		}
		count++;
	}
	fields[count++] = SP_LOG_SECRET("token", sentinel);

	uint8_t *storage = malloc(room);
	check(storage != NULL, "out of memory");
	struct sp_buf out;
	sp_buf_init_fixed(&out, storage, room);
	int r = sp_log_format_line(&cfg, fuzz_clock(), level, msg, fields, count, &out);
	if (r != 0)
		fprintf(stderr, "fuzz_log: r=%d len=%zu room=%zu\n", r, out.len, room);
	check(r == 0, "formatting failed with enough room");
	size_t n = out.len;
	check(n > 0 && n <= room && n <= SP_LOG_LINE_MAX, "line longer than allowed");
	check(storage[n - 1] == '\n', "line does not end with a newline");
	for (size_t i = 0; i + 1 < n; i++)
		check(storage[i] >= 0x20 && storage[i] != 0x7f, "raw control character in line");
	/* jansson checks UTF-8 when making a string. */
	json_t *as_string = json_stringn((const char *)storage, n);
	check(as_string != NULL, "line is not valid UTF-8");
	json_decref(as_string);
	if (memmem(data, size, "SENTINEL", 8) == NULL)
		check(memmem(storage, n, "SENTINEL", 8) == NULL, "secret value written");
	if (cfg.format == SP_LOG_JSON) {
		json_error_t err;
		/* A UINT field past INT64_MAX is a valid JSON number jansson only reads as real. */
		json_t *root = json_loadb((const char *)storage, n - 1,
					  JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
		if (root == NULL) {
			fprintf(stderr, "fuzz_log: JSON does not parse: %s\n%.*s", err.text, (int)n,
				(const char *)storage);
			abort();
		}
		check(json_is_object(root), "JSON line is not an object");
		check(json_is_string(json_object_get(root, "ts")), "no ts");
		check(json_is_string(json_object_get(root, "level")), "no level");
		check(json_is_string(json_object_get(root, "msg")) ||
			  json_is_true(json_object_get(root, "truncated")),
		      "no msg");
		json_decref(root);
	}

	/* The writing wrapper, to a sink that discards. */
	static int devnull = -2;
	if (devnull == -2)
		devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	cfg.fd = devnull;
	cfg.level = (enum sp_log_level)(control >> 6);
	check(sp_log_write(&cfg, level, msg, fields, count) == 0, "write to /dev/null failed");

	free(storage);
	free(msg);
	return 0;
}
