/*
 * shared/tunnel.c — Sallyport flows as HTTP/2 CONNECT streams over nghttp2's memory API.
 *
 * nghttp2 does the framing, HPACK, flow-control arithmetic and the per-connection
 * protections (flood and reset-rate limits). This file adds what is Sallyport's: the
 * open request and its validation (nghttp2's generic HTTP checks are switched off so a
 * malformed open gets a 400 with a reason instead of a bare RST_STREAM), bounded send
 * queues with a deferred data provider, and receive windows that only reopen when the
 * application says the bytes have been used.
 */
#include "shared/tunnel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>

/* Where a stream stands in the open exchange. */
enum stream_state {
	STREAM_WAITING, /* client: request sent, no answer yet; server: headers arriving */
	STREAM_PENDING, /* server: handed to the application, not yet answered */
	STREAM_OPEN,	/* 200 sent or received: DATA flows */
	STREAM_REFUSED, /* answered 4xx/5xx (or malformed): nothing more for the app */
};

/* Bits of struct request_fields.seen. */
enum {
	SEEN_METHOD = 1u << 0,
	SEEN_AUTHORITY = 1u << 1,
	SEEN_PROTO = 1u << 2,
	SEEN_GRANT = 1u << 3,
	SEEN_FLOW = 1u << 4,
	SEEN_REGULAR = 1u << 5,
	SEEN_STATUS = 1u << 6,
	SEEN_REASON = 1u << 7,
};

/* The request (server) or answer (client) headers while they arrive. Owned by a stream. */
struct request_fields {
	char authority[SP_TUNNEL_AUTHORITY_MAX + 1];
	char flow_id[SP_TUNNEL_FLOW_ID_LEN + 1];
	char *grant; /* heap, NUL-terminated, at most SP_TUNNEL_GRANT_MAX */
	enum sp_tunnel_proto proto;
	unsigned seen;
	int bad;	   /* something was wrong: answer 400 */
	int nomem;	   /* we could not keep a field: answer 503 (overloaded), not 400 */
	size_t list_bytes; /* header list size so far (name + value + 32 per field) */
	int status;	   /* client: :status */
	enum sp_tunnel_reason reason;
};

/*
 * One flow. Allocated when its HEADERS are sent (client) or begin to arrive (server),
 * freed in the stream-close callback or by sp_tunnel_free. Linked into the tunnel's list.
 */
struct tunnel_stream {
	struct tunnel_stream *prev, *next; /* the tunnel's list of streams */
	struct tunnel_stream *hash_next;   /* the tunnel's id table, once the id is known */
	int32_t id;
	enum stream_state state;
	int app_knows; /* the application has heard of this stream: owes it on_closed */
	void *user;
	struct request_fields *fields; /* while headers arrive */
	/* Bytes to send: a ring of queue_cap bytes, growing up to the tunnel's max_queued. */
	uint8_t *queue;
	size_t queue_cap, queue_head, queue_len;
	int end_requested; /* sp_tunnel_end called: END_STREAM after the queue */
	int deferred;	   /* the data provider returned DEFERRED: resume on new bytes */
	int has_provider;  /* a data provider is attached (request or 200 submitted) */
	int write_blocked; /* an sp_tunnel_write was cut short: fire on_writable later */
	size_t unconsumed; /* delivered by on_data, not yet given to sp_tunnel_consumed */
};

struct sp_tunnel {
	nghttp2_session *session;
	enum sp_tunnel_role role;
	struct sp_tunnel_callbacks cb;
	void *user;
	struct sp_tunnel_options opts;
	struct tunnel_stream *streams;
	/*
	 * Streams by id. nghttp2 only knows a client stream once its HEADERS went out, but
	 * the application may write to it at once, so the tunnel keeps its own table.
	 */
	struct tunnel_stream **buckets;
	size_t bucket_count; /* a power of two, at least the number of indexed streams */
	size_t indexed;
	struct sp_tunnel_stats stats;
	/* Output nghttp2 produced that did not fit the caller's buffer. */
	uint8_t *spill;
	size_t spill_len, spill_off;
	int failed;	      /* a fatal error: nothing more is accepted */
	int failed_nomem;     /* ... and it was ours: an allocation failed (SP_ERR_NOMEM) */
	int shutdown;	      /* we sent (or queued) GOAWAY */
	int peer_goaway;      /* the peer sent GOAWAY */
	int writable_pending; /* some write_blocked stream has room again */
	char error[160];      /* what nghttp2 reported last */
};

static const char *const reason_names[] = {
    [SP_TUNNEL_REASON_NONE] = "",
    [SP_TUNNEL_REASON_NO_POLICY] = "no_policy",
    [SP_TUNNEL_REASON_PORT_NOT_ALLOWED] = "port_not_allowed",
    [SP_TUNNEL_REASON_REVOKED] = "revoked",
    [SP_TUNNEL_REASON_EXPIRED] = "expired",
    [SP_TUNNEL_REASON_DNS_ERROR] = "dns_error",
    [SP_TUNNEL_REASON_CONNECT_FAILED] = "connect_failed",
    [SP_TUNNEL_REASON_BAD_GRANT] = "bad_grant",
    [SP_TUNNEL_REASON_CONNECTOR_UNAVAILABLE] = "connector_unavailable",
    [SP_TUNNEL_REASON_BAD_REQUEST] = "bad_request",
    [SP_TUNNEL_REASON_OVERLOADED] = "overloaded",
    [SP_TUNNEL_REASON_UNKNOWN] = "unknown",
};

const char *sp_tunnel_reason_name(enum sp_tunnel_reason reason)
{
	if ((unsigned)reason > (unsigned)SP_TUNNEL_REASON_UNKNOWN)
		return "unknown";
	return reason_names[reason];
}

enum sp_tunnel_reason sp_tunnel_reason_parse(const char *name, size_t len)
{
	if (name == NULL || len == 0)
		return SP_TUNNEL_REASON_UNKNOWN;
	for (int r = SP_TUNNEL_REASON_NO_POLICY; r < SP_TUNNEL_REASON_UNKNOWN; r++) {
		const char *known = reason_names[r];
		if (strlen(known) == len && memcmp(known, name, len) == 0)
			return (enum sp_tunnel_reason)r;
	}
	return SP_TUNNEL_REASON_UNKNOWN;
}

/* ---- open request validation ---- */

static int is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static int is_base64url_or_dot(uint8_t c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || is_digit(c) || c == '-' ||
	       c == '_' || c == '.';
}

static int is_lower_hex(uint8_t c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f');
}

/* A host character outside brackets: printable, no separators of URLs or authorities. */
static int is_host_char(uint8_t c)
{
	return c > 0x20 && c < 0x7f && strchr(":/?#@[]\\", c) == NULL;
}

static int is_ipv6_literal_char(uint8_t c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' ||
	       c == '.' || c == '%' || c == '-' || c == '_' || (c >= 'g' && c <= 'z') ||
	       (c >= 'G' && c <= 'Z');
}

static int check_authority(const char *authority, size_t len, struct sp_diag *diag)
{
	if (len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "authority is empty");
	if (len > SP_TUNNEL_AUTHORITY_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "authority is %zu bytes; at most %d",
				   len, SP_TUNNEL_AUTHORITY_MAX);
	const uint8_t *a = (const uint8_t *)authority;
	size_t colon = len;
	while (colon > 0 && a[colon - 1] != ':')
		colon--;
	if (colon == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "authority has no :port");
	size_t host_len = colon - 1;
	if (host_len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "authority has no host");
	if (a[0] == '[') {
		if (host_len < 3 || a[host_len - 1] != ']')
			return sp_diag_set(diag, SP_ERR_INVALID, "authority: unclosed [IPv6]");
		for (size_t i = 1; i + 1 < host_len; i++)
			if (!is_ipv6_literal_char(a[i]))
				return sp_diag_set(diag, SP_ERR_INVALID,
						   "authority: bad character at %zu in [IPv6]", i);
	} else {
		for (size_t i = 0; i < host_len; i++)
			if (!is_host_char(a[i]))
				return sp_diag_set(diag, SP_ERR_INVALID,
						   "authority: bad host character at %zu", i);
	}
	size_t port_len = len - colon;
	if (port_len == 0 || port_len > 5 || a[colon] == '0')
		return sp_diag_set(diag, SP_ERR_INVALID, "authority: port must be 1..65535");
	uint32_t port = 0;
	for (size_t i = colon; i < len; i++) {
		if (!is_digit(a[i]))
			return sp_diag_set(diag, SP_ERR_INVALID, "authority: port is not decimal");
		port = port * 10 + (uint32_t)(a[i] - '0');
	}
	if (port > 65535)
		return sp_diag_set(diag, SP_ERR_INVALID, "authority: port %u above 65535", port);
	return 0;
}

static int check_grant(const char *grant, size_t len, struct sp_diag *diag)
{
	if (len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "grant is empty");
	if (len > SP_TUNNEL_GRANT_MAX)
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "grant is %zu bytes; at most %d", len,
				   SP_TUNNEL_GRANT_MAX);
	for (size_t i = 0; i < len; i++)
		if (!is_base64url_or_dot((uint8_t)grant[i]))
			return sp_diag_set(diag, SP_ERR_INVALID, "grant: bad character at %zu", i);
	return 0;
}

static int check_flow_id(const char *flow, size_t len, struct sp_diag *diag)
{
	if (len != SP_TUNNEL_FLOW_ID_LEN)
		return sp_diag_set(diag, SP_ERR_INVALID, "flow id is %zu characters; must be %d",
				   len, SP_TUNNEL_FLOW_ID_LEN);
	for (size_t i = 0; i < len; i++)
		if (!is_lower_hex((uint8_t)flow[i]))
			return sp_diag_set(diag, SP_ERR_INVALID,
					   "flow id: not lower-case hex at %zu", i);
	return 0;
}

int sp_tunnel_request_check(const struct sp_tunnel_open_request *req, struct sp_diag *diag)
{
	if (req == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "no request");
	if (req->authority == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "authority is missing");
	if (req->grant == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "grant is missing");
	if (req->flow_id == NULL)
		return sp_diag_set(diag, SP_ERR_INVALID, "flow id is missing");
	if (req->proto != SP_TUNNEL_PROTO_TCP && req->proto != SP_TUNNEL_PROTO_UDP)
		return sp_diag_set(diag, SP_ERR_INVALID, "proto must be tcp or udp");
	int r = check_authority(req->authority,
				strnlen(req->authority, SP_TUNNEL_AUTHORITY_MAX + 1), diag);
	if (r < 0)
		return r;
	r = check_grant(req->grant, strnlen(req->grant, SP_TUNNEL_GRANT_MAX + 1), diag);
	if (r < 0)
		return r;
	return check_flow_id(req->flow_id, strnlen(req->flow_id, SP_TUNNEL_FLOW_ID_LEN + 1), diag);
}

/* ---- streams ---- */

static size_t bucket_of(size_t bucket_count, int32_t id)
{
	/* Client ids are odd, server ids even: the low bit carries no information. */
	return ((uint32_t)id >> 1) & (bucket_count - 1);
}

static struct tunnel_stream *stream_find(const struct sp_tunnel *t, int32_t id)
{
	if (t == NULL || id <= 0)
		return NULL;
	struct tunnel_stream *s = t->buckets[bucket_of(t->bucket_count, id)];
	while (s != NULL && s->id != id)
		s = s->hash_next;
	return s;
}

static void fields_free(struct request_fields *f)
{
	if (f == NULL)
		return;
	if (f->grant != NULL) {
		/* A grant is a bearer credential for its flow: wipe before freeing. */
		OPENSSL_cleanse(f->grant, strlen(f->grant));
		free(f->grant);
	}
	free(f);
}

/* Puts s (whose id is now set) into the id table, doubling the table when it is full. */
static int stream_index(struct sp_tunnel *t, struct tunnel_stream *s)
{
	if (t->indexed + 1 > t->bucket_count) {
		size_t count = t->bucket_count * 2;
		struct tunnel_stream **buckets = calloc(count, sizeof(*buckets));
		if (buckets == NULL)
			return SP_ERR_NOMEM;
		for (struct tunnel_stream *e = t->streams; e != NULL; e = e->next) {
			if (e->id <= 0 || e == s)
				continue;
			size_t b = bucket_of(count, e->id);
			e->hash_next = buckets[b];
			buckets[b] = e;
		}
		free(t->buckets);
		t->buckets = buckets;
		t->bucket_count = count;
	}
	size_t b = bucket_of(t->bucket_count, s->id);
	s->hash_next = t->buckets[b];
	t->buckets[b] = s;
	t->indexed++;
	return 0;
}

static struct tunnel_stream *stream_new(struct sp_tunnel *t)
{
	struct tunnel_stream *s = calloc(1, sizeof(*s));
	if (s == NULL)
		return NULL;
	s->state = STREAM_WAITING;
	s->next = t->streams;
	if (t->streams != NULL)
		t->streams->prev = s;
	t->streams = s;
	t->stats.streams_open++;
	t->stats.streams_total++;
	return s;
}

static void stream_free(struct sp_tunnel *t, struct tunnel_stream *s)
{
	if (s->id > 0) {
		struct tunnel_stream **link = &t->buckets[bucket_of(t->bucket_count, s->id)];
		while (*link != NULL && *link != s)
			link = &(*link)->hash_next;
		if (*link == s) {
			*link = s->hash_next;
			t->indexed--;
		}
	}
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		t->streams = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	t->stats.streams_open--;
	fields_free(s->fields);
	free(s->queue);
	free(s);
}

/* Drops queued bytes (a refused or reset stream sends nothing more). */
static void queue_clear(struct tunnel_stream *s)
{
	s->queue_head = 0;
	s->queue_len = 0;
}

/* Appends up to len bytes to the ring, growing it up to max; returns how many fit. */
static int queue_append(struct tunnel_stream *s, size_t max, const uint8_t *data, size_t len,
			size_t *accepted)
{
	*accepted = 0;
	size_t room = max > s->queue_len ? max - s->queue_len : 0;
	size_t n = len < room ? len : room;
	if (n == 0)
		return 0;
	if (s->queue_len + n > s->queue_cap) {
		size_t cap = s->queue_cap != 0 ? s->queue_cap : 16 * 1024;
		while (cap < s->queue_len + n)
			cap *= 2;
		if (cap > max)
			cap = max;
		uint8_t *grown = malloc(cap);
		if (grown == NULL)
			return SP_ERR_NOMEM;
		/* Linearise the old contents at the front. */
		size_t first = s->queue_cap - s->queue_head;
		if (first > s->queue_len)
			first = s->queue_len;
		if (s->queue_len > 0) {
			memcpy(grown, s->queue + s->queue_head, first);
			memcpy(grown + first, s->queue, s->queue_len - first);
		}
		free(s->queue);
		s->queue = grown;
		s->queue_cap = cap;
		s->queue_head = 0;
	}
	size_t tail = (s->queue_head + s->queue_len) % s->queue_cap;
	size_t first = s->queue_cap - tail;
	if (first > n)
		first = n;
	memcpy(s->queue + tail, data, first);
	memcpy(s->queue, data + first, n - first);
	s->queue_len += n;
	*accepted = n;
	return 0;
}

/* Moves up to len bytes from the ring into out. */
static size_t queue_take(struct tunnel_stream *s, uint8_t *out, size_t len)
{
	size_t n = len < s->queue_len ? len : s->queue_len;
	if (n == 0)
		return 0;
	size_t first = s->queue_cap - s->queue_head;
	if (first > n)
		first = n;
	memcpy(out, s->queue + s->queue_head, first);
	memcpy(out + first, s->queue, n - first);
	s->queue_head = (s->queue_head + n) % (s->queue_cap != 0 ? s->queue_cap : 1);
	s->queue_len -= n;
	if (s->queue_len == 0)
		s->queue_head = 0;
	return n;
}

static void stream_resume(struct sp_tunnel *t, struct tunnel_stream *s)
{
	if (s->deferred && s->has_provider) {
		s->deferred = 0;
		(void)nghttp2_session_resume_data(t->session, s->id);
	}
}

/* ---- nghttp2 callbacks ---- */

/* Hands queued bytes to nghttp2 as DATA; defers when there are none yet. */
static ssize_t data_read(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
			 uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
	(void)session;
	(void)source;
	struct sp_tunnel *t = user_data;
	struct tunnel_stream *s = stream_find(t, stream_id);
	if (s == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (s->state != STREAM_OPEN || (s->queue_len == 0 && !s->end_requested)) {
		s->deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	size_t n = queue_take(s, buf, length);
	t->stats.bytes_out += n;
	if (s->queue_len == 0 && s->end_requested)
		*data_flags |= NGHTTP2_DATA_FLAG_EOF;
	if (s->write_blocked && s->queue_len * 2 <= t->opts.max_queued)
		t->writable_pending = 1;
	return (ssize_t)n;
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	(void)session;
	struct sp_tunnel *t = user_data;
	int32_t id = frame->hd.stream_id;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (t->role == SP_TUNNEL_SERVER && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
		struct tunnel_stream *s = stream_new(t);
		if (s == NULL)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		s->id = id;
		s->fields = calloc(1, sizeof(*s->fields));
		if (s->fields == NULL || stream_index(t, s) < 0) {
			stream_free(t, s);
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		}
		return 0;
	}
	struct tunnel_stream *s = stream_find(t, id);
	if (t->role == SP_TUNNEL_CLIENT && s != NULL &&
	    frame->headers.cat == NGHTTP2_HCAT_RESPONSE && s->fields == NULL) {
		s->fields = calloc(1, sizeof(*s->fields));
		if (s->fields == NULL)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
	}
	return 0;
}

static int name_is(const uint8_t *name, size_t len, const char *want)
{
	size_t n = strlen(want);
	return len == n && memcmp(name, want, n) == 0;
}

static int value_is(const uint8_t *value, size_t len, const char *want)
{
	return name_is(value, len, want);
}

/* A lower-case token (RFC 9110 tchar without upper case), as HTTP/2 field names must be. */
static int field_name_ok(const uint8_t *name, size_t len)
{
	if (len == 0)
		return 0;
	for (size_t i = 0; i < len; i++) {
		uint8_t c = name[i];
		if (i == 0 && c == ':')
			continue;
		if (!((c >= 'a' && c <= 'z') || is_digit(c) ||
		      strchr("!#$%&'*+-.^_`|~", c) != NULL) ||
		    c == 0)
			return 0;
	}
	return 1;
}

static int field_value_ok(const uint8_t *value, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (value[i] == 0 || value[i] == '\r' || value[i] == '\n')
			return 0;
	return 1;
}

/* One request field on the server. Marks the request bad rather than failing. */
static void request_field(struct sp_tunnel *t, struct request_fields *f, const uint8_t *name,
			  size_t namelen, const uint8_t *value, size_t valuelen)
{
	if (f->bad || f->nomem)
		return;
	f->list_bytes += namelen + valuelen + 32;
	if (f->list_bytes > t->opts.max_header_list || !field_name_ok(name, namelen) ||
	    !field_value_ok(value, valuelen)) {
		f->bad = 1;
		return;
	}
	unsigned bit = 0;
	if (name[0] == ':') {
		if (f->seen & SEEN_REGULAR) {
			f->bad = 1; /* pseudo-headers come first */
		} else if (name_is(name, namelen, ":method")) {
			bit = SEEN_METHOD;
			f->bad = !value_is(value, valuelen, "CONNECT");
		} else if (name_is(name, namelen, ":authority")) {
			bit = SEEN_AUTHORITY;
			if (valuelen > SP_TUNNEL_AUTHORITY_MAX) {
				f->bad = 1;
			} else {
				memcpy(f->authority, value, valuelen);
				f->authority[valuelen] = '\0';
			}
		} else {
			f->bad = 1; /* :scheme, :path, :protocol, :status or unknown */
		}
	} else {
		f->seen |= SEEN_REGULAR;
		if (name_is(name, namelen, "sallyport-proto")) {
			bit = SEEN_PROTO;
			if (value_is(value, valuelen, "tcp"))
				f->proto = SP_TUNNEL_PROTO_TCP;
			else if (value_is(value, valuelen, "udp"))
				f->proto = SP_TUNNEL_PROTO_UDP;
			else
				f->bad = 1;
		} else if (name_is(name, namelen, "sallyport-grant")) {
			bit = SEEN_GRANT;
			if (valuelen > SP_TUNNEL_GRANT_MAX || (f->seen & SEEN_GRANT)) {
				f->bad = 1;
			} else {
				f->grant = malloc(valuelen + 1);
				if (f->grant == NULL) {
					f->nomem = 1; /* our failure, not the client's */
					return;
				} else {
					memcpy(f->grant, value, valuelen);
					f->grant[valuelen] = '\0';
				}
			}
		} else if (name_is(name, namelen, "sallyport-flow")) {
			bit = SEEN_FLOW;
			if (valuelen != SP_TUNNEL_FLOW_ID_LEN) {
				f->bad = 1;
			} else {
				memcpy(f->flow_id, value, valuelen);
				f->flow_id[valuelen] = '\0';
			}
		}
		/* Other fields are ignored: room for later versions. */
	}
	if (bit != 0) {
		if (f->seen & bit)
			f->bad = 1; /* duplicated */
		f->seen |= bit;
	}
}

/* One answer field on the client. */
static void response_field(struct request_fields *f, const uint8_t *name, size_t namelen,
			   const uint8_t *value, size_t valuelen)
{
	if (name_is(name, namelen, ":status")) {
		if ((f->seen & SEEN_STATUS) || valuelen != 3 || !is_digit(value[0]) ||
		    !is_digit(value[1]) || !is_digit(value[2])) {
			f->bad = 1;
			return;
		}
		f->seen |= SEEN_STATUS;
		f->status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
	} else if (name_is(name, namelen, "sallyport-reason")) {
		f->seen |= SEEN_REASON;
		f->reason = sp_tunnel_reason_parse((const char *)value, valuelen);
	}
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	(void)session;
	(void)flags;
	struct sp_tunnel *t = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	struct tunnel_stream *s = stream_find(t, frame->hd.stream_id);
	if (s == NULL || s->fields == NULL || s->state != STREAM_WAITING)
		return 0; /* trailers and late fields are ignored */
	if (t->role == SP_TUNNEL_SERVER)
		request_field(t, s->fields, name, namelen, value, valuelen);
	else
		response_field(s->fields, name, namelen, value, valuelen);
	return 0;
}

static int submit_answer(struct sp_tunnel *t, struct tunnel_stream *s, int status,
			 enum sp_tunnel_reason reason)
{
	char status_text[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
			       (char)('0' + status % 10), '\0'};
	const char *reason_text = sp_tunnel_reason_name(reason);
	nghttp2_nv nv[2] = {
	    {(uint8_t *)":status", (uint8_t *)status_text, 7, 3, NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)"sallyport-reason", (uint8_t *)reason_text, 16, strlen(reason_text),
	     NGHTTP2_NV_FLAG_NONE},
	};
	int rv;
	if (status == 200) {
		nghttp2_data_provider provider = {.source = {.ptr = s}, .read_callback = data_read};
		rv = nghttp2_submit_response(t->session, s->id, nv, 1, &provider);
		if (rv == 0) {
			s->has_provider = 1;
			s->state = STREAM_OPEN;
		}
	} else {
		rv = nghttp2_submit_response(t->session, s->id, nv, 2, NULL);
		if (rv == 0) {
			s->state = STREAM_REFUSED;
			queue_clear(s);
		}
	}
	if (rv == NGHTTP2_ERR_NOMEM)
		return SP_ERR_NOMEM;
	return rv == 0 ? 0 : SP_ERR_INVALID;
}

static int deliver_remote_end(struct sp_tunnel *t, struct tunnel_stream *s)
{
	if (s->app_knows && s->state != STREAM_REFUSED && t->cb.on_remote_end != NULL)
		t->cb.on_remote_end(t, s->id, t->user);
	return 0;
}

/* Server: the request headers are complete. */
static int request_complete(struct sp_tunnel *t, struct tunnel_stream *s)
{
	struct request_fields *f = s->fields;
	unsigned need = SEEN_METHOD | SEEN_AUTHORITY | SEEN_PROTO | SEEN_GRANT | SEEN_FLOW;
	struct sp_tunnel_open_request req = {
	    .authority = f->authority,
	    .proto = f->proto,
	    .grant = f->grant,
	    .flow_id = f->flow_id,
	};
	int bad = !f->nomem && (f->bad || (f->seen & need) != need ||
				sp_tunnel_request_check(&req, NULL) < 0);
	if (bad || f->nomem || t->shutdown) {
		s->fields = NULL;
		fields_free(f);
		int r =
		    submit_answer(t, s, bad ? 400 : 503,
				  bad ? SP_TUNNEL_REASON_BAD_REQUEST : SP_TUNNEL_REASON_OVERLOADED);
		return r == SP_ERR_NOMEM ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
	}
	s->state = STREAM_PENDING;
	s->app_knows = 1;
	s->fields = NULL;
	if (t->cb.on_open_request != NULL)
		t->cb.on_open_request(t, s->id, &req, t->user);
	/* The strings were valid for the callback only. */
	fields_free(f);
	return 0;
}

/* Client: the answer headers are complete. */
static int response_complete(struct sp_tunnel *t, struct tunnel_stream *s)
{
	struct request_fields *f = s->fields;
	s->fields = NULL;
	int status = f->status;
	enum sp_tunnel_reason reason = f->reason;
	int valid = !f->bad && (f->seen & SEEN_STATUS);
	int has_reason = (f->seen & SEEN_REASON) != 0;
	fields_free(f);
	if (valid && status == 200) {
		s->state = STREAM_OPEN;
		if (t->cb.on_open_result != NULL)
			t->cb.on_open_result(t, s->id, 200, SP_TUNNEL_REASON_NONE, t->user);
		s = stream_find(t, s->id);
		if (s != NULL)
			stream_resume(t, s);
		return 0;
	}
	int32_t id = s->id;
	if (valid && status >= 400 && status <= 599) {
		s->state = STREAM_REFUSED;
		queue_clear(s);
		if (!has_reason || reason == SP_TUNNEL_REASON_NONE)
			reason = SP_TUNNEL_REASON_UNKNOWN;
		if (t->cb.on_open_result != NULL)
			t->cb.on_open_result(t, id, status, reason, t->user);
		/* Close our half too: the flow is over. */
		if (nghttp2_submit_rst_stream(t->session, NGHTTP2_FLAG_NONE, id,
					      NGHTTP2_NO_ERROR) == NGHTTP2_ERR_NOMEM)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		return 0;
	}
	/* Informational, 3xx, 2xx other than 200, or malformed: not a Sallyport answer. */
	s->state = STREAM_REFUSED;
	queue_clear(s);
	if (nghttp2_submit_rst_stream(t->session, NGHTTP2_FLAG_NONE, id, NGHTTP2_PROTOCOL_ERROR) ==
	    NGHTTP2_ERR_NOMEM)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	(void)session;
	struct sp_tunnel *t = user_data;
	int32_t id = frame->hd.stream_id;
	if (frame->hd.type == NGHTTP2_GOAWAY) {
		t->peer_goaway = 1;
		return 0;
	}
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	struct tunnel_stream *s = stream_find(t, id);
	if (s == NULL)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS && s->fields != NULL && s->state == STREAM_WAITING) {
		int r =
		    t->role == SP_TUNNEL_SERVER ? request_complete(t, s) : response_complete(t, s);
		if (r != 0)
			return r;
		s = stream_find(t, id);
		if (s == NULL)
			return 0;
	}
	if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)
		return deliver_remote_end(t, s);
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			 const uint8_t *data, size_t len, void *user_data)
{
	(void)flags;
	struct sp_tunnel *t = user_data;
	t->stats.bytes_in += len;
	struct tunnel_stream *s = stream_find(t, stream_id);
	int deliver = s != NULL && s->app_knows &&
		      (s->state == STREAM_OPEN ||
		       (s->state == STREAM_PENDING && t->role == SP_TUNNEL_SERVER));
	if (!deliver) {
		/* Nobody will use these bytes: give the window back at once. */
		if (nghttp2_session_consume(session, stream_id, len) == NGHTTP2_ERR_NOMEM)
			return NGHTTP2_ERR_CALLBACK_FAILURE;
		return 0;
	}
	s->unconsumed += len;
	if (t->cb.on_data != NULL)
		t->cb.on_data(t, stream_id, data, len, t->user);
	return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct sp_tunnel *t = user_data;
	if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
		/*
		 * nghttp2 found a connection error in what the peer sent: this is our last word.
		 * INTERNAL_ERROR is never the peer's fault: nghttp2 sends it when it could not
		 * build a frame of ours (an allocation failed while packing headers).
		 */
		t->failed = 1;
		if (frame->goaway.error_code == NGHTTP2_INTERNAL_ERROR)
			t->failed_nomem = 1;
		if (t->error[0] == '\0')
			snprintf(t->error, sizeof(t->error), "connection error %u",
				 frame->goaway.error_code);
		return 0;
	}
	if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	struct tunnel_stream *s = stream_find(t, frame->hd.stream_id);
	/* A refusal ends our side; stop the peer's side too unless it ended already. */
	if (s != NULL && s->state == STREAM_REFUSED && t->role == SP_TUNNEL_SERVER &&
	    nghttp2_session_get_stream_remote_close(session, s->id) == 0)
		(void)nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id,
						NGHTTP2_NO_ERROR);
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user_data)
{
	struct sp_tunnel *t = user_data;
	struct tunnel_stream *s = stream_find(t, stream_id);
	if (s == NULL)
		return 0;
	/* Bytes the application never consumed still hold the connection window. */
	if (s->unconsumed > 0)
		(void)nghttp2_session_consume_connection(session, s->unconsumed);
	s->unconsumed = 0;
	if (s->app_knows && t->cb.on_closed != NULL)
		t->cb.on_closed(t, stream_id, error_code, t->user);
	stream_free(t, s);
	return 0;
}

/* A request that never went out (GOAWAY arrived, or it was reset first) closes here. */
static int on_frame_not_send(nghttp2_session *session, const nghttp2_frame *frame,
			     int lib_error_code, void *user_data)
{
	(void)lib_error_code;
	struct sp_tunnel *t = user_data;
	if (frame->hd.type != NGHTTP2_HEADERS || t->role != SP_TUNNEL_CLIENT)
		return 0;
	struct tunnel_stream *s = stream_find(t, frame->hd.stream_id);
	if (s == NULL || s->state != STREAM_WAITING)
		return 0;
	if (nghttp2_session_find_stream(session, s->id) != NULL)
		return 0; /* nghttp2 will report its close */
	return on_stream_close(session, s->id, NGHTTP2_REFUSED_STREAM, user_data);
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
		    void *user_data)
{
	(void)session;
	(void)lib_error_code;
	struct sp_tunnel *t = user_data;
	size_t n = len < sizeof(t->error) - 1 ? len : sizeof(t->error) - 1;
	memcpy(t->error, msg, n);
	t->error[n] = '\0';
	return 0;
}

/* ---- life cycle ---- */

int sp_tunnel_new(enum sp_tunnel_role role, const struct sp_tunnel_callbacks *cb, void *user,
		  const struct sp_tunnel_options *opts, struct sp_tunnel **out)
{
	int r = SP_ERR_NOMEM;
	nghttp2_session_callbacks *callbacks = NULL;
	nghttp2_option *option = NULL;
	struct sp_tunnel *t = NULL;
	if (out == NULL)
		return SP_ERR_INVALID;
	*out = NULL;
	if (role != SP_TUNNEL_CLIENT && role != SP_TUNNEL_SERVER)
		return SP_ERR_INVALID;
	struct sp_tunnel_options o;
	memset(&o, 0, sizeof(o));
	if (opts != NULL)
		o = *opts;
	if (o.stream_window == 0)
		o.stream_window = SP_TUNNEL_DEFAULT_STREAM_WINDOW;
	if (o.connection_window == 0)
		o.connection_window = SP_TUNNEL_DEFAULT_CONNECTION_WINDOW;
	if (o.max_streams == 0)
		o.max_streams = SP_TUNNEL_DEFAULT_MAX_STREAMS;
	if (o.max_header_list == 0)
		o.max_header_list = SP_TUNNEL_DEFAULT_MAX_HEADER_LIST;
	if (o.max_queued == 0)
		o.max_queued = SP_TUNNEL_DEFAULT_MAX_QUEUED;
	if (o.stream_window > INT32_MAX || o.connection_window > INT32_MAX ||
	    o.stream_window < 16384 || o.connection_window < 65535)
		return SP_ERR_INVALID;

	t = calloc(1, sizeof(*t));
	if (t == NULL)
		goto out;
	t->role = role;
	if (cb != NULL)
		t->cb = *cb;
	t->user = user;
	t->opts = o;
	t->bucket_count = 64;
	t->buckets = calloc(t->bucket_count, sizeof(*t->buckets));
	if (t->buckets == NULL)
		goto out;
	if (nghttp2_session_callbacks_new(&callbacks) != 0 || nghttp2_option_new(&option) != 0)
		goto out;
	nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send);
	nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(callbacks, on_frame_not_send);
	nghttp2_session_callbacks_set_error_callback2(callbacks, on_error);
	/* The application decides when received bytes are used (sp_tunnel_consumed). */
	nghttp2_option_set_no_auto_window_update(option, 1);
	/* We check CONNECT requests ourselves so that bad ones get a 400 with a reason. */
	nghttp2_option_set_no_http_messaging(option, 1);
	nghttp2_option_set_max_deflate_dynamic_table_size(option, 4096);
	int rv = role == SP_TUNNEL_CLIENT
		     ? nghttp2_session_client_new2(&t->session, callbacks, t, option)
		     : nghttp2_session_server_new2(&t->session, callbacks, t, option);
	if (rv != 0)
		goto out;
	nghttp2_settings_entry settings[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o.max_streams},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o.stream_window},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, o.max_header_list},
	    {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
	};
	/* ENABLE_PUSH is a client-only setting. */
	size_t count = role == SP_TUNNEL_CLIENT ? 4 : 3;
	if (nghttp2_submit_settings(t->session, NGHTTP2_FLAG_NONE, settings, count) != 0)
		goto out;
	if (nghttp2_session_set_local_window_size(t->session, NGHTTP2_FLAG_NONE, 0,
						  (int32_t)o.connection_window) != 0)
		goto out;
	*out = t;
	t = NULL;
	r = 0;
out:
	nghttp2_session_callbacks_del(callbacks);
	nghttp2_option_del(option);
	sp_tunnel_free(t);
	return r;
}

void sp_tunnel_free(struct sp_tunnel *t)
{
	if (t == NULL)
		return;
	/* nghttp2 deletes its streams without close callbacks; ours go without them too. */
	nghttp2_session_del(t->session);
	while (t->streams != NULL)
		stream_free(t, t->streams);
	free(t->buckets);
	free(t->spill);
	free(t);
}

/* ---- byte pumps ---- */

int sp_tunnel_recv(struct sp_tunnel *t, const void *in, size_t len, struct sp_diag *diag)
{
	if (t == NULL || (in == NULL && len > 0))
		return SP_ERR_INVALID;
	if (t->failed)
		return sp_diag_set(diag, t->failed_nomem ? SP_ERR_NOMEM : SP_ERR_INVALID,
				   "tunnel already failed: %s", t->error);
	ssize_t n = nghttp2_session_mem_recv(t->session, in, len);
	if (n < 0) {
		t->failed = 1;
		if (n == NGHTTP2_ERR_NOMEM || n == NGHTTP2_ERR_CALLBACK_FAILURE)
			return sp_diag_set(diag, SP_ERR_NOMEM, "out of memory in the tunnel");
		if (t->error[0] == '\0')
			snprintf(t->error, sizeof(t->error), "%s", nghttp2_strerror((int)n));
		return sp_diag_set(diag, SP_ERR_INVALID, "HTTP/2 error: %s", t->error);
	}
	/*
	 * A connection error makes nghttp2 queue GOAWAY and stop reading; unless a GOAWAY was
	 * exchanged on purpose, no reading means the peer broke the protocol.
	 */
	if (nghttp2_session_want_read(t->session) == 0 && !t->shutdown && !t->peer_goaway) {
		t->failed = 1;
		if (t->error[0] == '\0')
			snprintf(t->error, sizeof(t->error), "connection error");
		return sp_diag_set(diag, SP_ERR_INVALID, "HTTP/2 error: %s", t->error);
	}
	return 0;
}

/*
 * Calls on_writable for streams whose queues drained to half since a short write. Outside
 * nghttp2's calls no stream is freed, so the walk survives what the callbacks do (a stream
 * opened meanwhile joins at the head of the list, behind the walk).
 */
static void notify_writable(struct sp_tunnel *t)
{
	if (!t->writable_pending)
		return;
	t->writable_pending = 0;
	for (struct tunnel_stream *s = t->streams; s != NULL; s = s->next) {
		if (s->write_blocked && s->queue_len * 2 <= t->opts.max_queued) {
			s->write_blocked = 0;
			if (t->cb.on_writable != NULL)
				t->cb.on_writable(t, s->id, t->user);
		}
	}
}

int sp_tunnel_send(struct sp_tunnel *t, struct sp_buf *out)
{
	if (t == NULL || out == NULL)
		return SP_ERR_INVALID;
	for (;;) {
		size_t room = out->max > out->len ? out->max - out->len : 0;
		if (room == 0)
			break;
		if (t->spill_off < t->spill_len) {
			size_t n = t->spill_len - t->spill_off;
			if (n > room)
				n = room;
			int r = sp_buf_put(out, t->spill + t->spill_off, n);
			if (r < 0)
				return r;
			t->spill_off += n;
			continue;
		}
		const uint8_t *data = NULL;
		ssize_t n = nghttp2_session_mem_send(t->session, &data);
		if (n < 0) {
			t->failed = 1;
			return n == NGHTTP2_ERR_NOMEM ? SP_ERR_NOMEM : SP_ERR_INVALID;
		}
		if (n == 0)
			break;
		size_t now = (size_t)n < room ? (size_t)n : room;
		int r = sp_buf_put(out, data, now);
		if (r < 0)
			now = 0;
		if (now < (size_t)n) {
			/* Keep the rest: nghttp2 reuses its buffer on the next call. */
			uint8_t *spill = realloc(t->spill, (size_t)n - now);
			if (spill == NULL)
				return SP_ERR_NOMEM;
			t->spill = spill;
			memcpy(t->spill, data + now, (size_t)n - now);
			t->spill_len = (size_t)n - now;
			t->spill_off = 0;
			if (r < 0)
				return r;
		}
	}
	if (t->spill_off == t->spill_len)
		t->spill_off = t->spill_len = 0;
	notify_writable(t);
	return 0;
}

int sp_tunnel_want_write(const struct sp_tunnel *t)
{
	if (t == NULL)
		return 0;
	return t->spill_off < t->spill_len || nghttp2_session_want_write(t->session) != 0;
}

int sp_tunnel_is_done(const struct sp_tunnel *t)
{
	if (t == NULL)
		return 1;
	if (sp_tunnel_want_write(t))
		return 0;
	if (t->failed)
		return 1;
	return nghttp2_session_want_read(t->session) == 0;
}

/* ---- client ---- */

int sp_tunnel_can_open(const struct sp_tunnel *t)
{
	if (t == NULL || t->role != SP_TUNNEL_CLIENT || t->failed || t->shutdown || t->peer_goaway)
		return 0;
	uint32_t remote = nghttp2_session_get_remote_settings(
	    t->session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
	uint32_t limit = remote < t->opts.max_streams ? remote : t->opts.max_streams;
	return t->stats.streams_open < limit &&
	       nghttp2_session_check_request_allowed(t->session) != 0;
}

int sp_tunnel_open(struct sp_tunnel *t, const struct sp_tunnel_open_request *req, int32_t *stream,
		   struct sp_diag *diag)
{
	if (stream != NULL)
		*stream = 0;
	if (t == NULL || stream == NULL || t->role != SP_TUNNEL_CLIENT)
		return sp_diag_set(diag, SP_ERR_INVALID, "not a client tunnel");
	if (t->failed || t->shutdown || t->peer_goaway)
		return sp_diag_set(diag, SP_ERR_INVALID, "tunnel is draining");
	int r = sp_tunnel_request_check(req, diag);
	if (r < 0)
		return r;
	if (!sp_tunnel_can_open(t))
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "stream limit reached");
	struct tunnel_stream *s = stream_new(t);
	if (s == NULL)
		return SP_ERR_NOMEM;
	const char *proto = req->proto == SP_TUNNEL_PROTO_TCP ? "tcp" : "udp";
	nghttp2_nv nv[] = {
	    {(uint8_t *)":method", (uint8_t *)"CONNECT", 7, 7, NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)":authority", (uint8_t *)req->authority, 10, strlen(req->authority),
	     NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)"sallyport-proto", (uint8_t *)proto, 15, 3, NGHTTP2_NV_FLAG_NONE},
	    {(uint8_t *)"sallyport-grant", (uint8_t *)req->grant, 15, strlen(req->grant),
	     NGHTTP2_NV_FLAG_NONE},
	    /* Unique per flow: indexing it would only evict the grant from the table. */
	    {(uint8_t *)"sallyport-flow", (uint8_t *)req->flow_id, 14, SP_TUNNEL_FLOW_ID_LEN,
	     NGHTTP2_NV_FLAG_NO_INDEX},
	};
	nghttp2_data_provider provider = {.source = {.ptr = s}, .read_callback = data_read};
	int32_t id = nghttp2_submit_request(t->session, NULL, nv, sizeof(nv) / sizeof(nv[0]),
					    &provider, NULL);
	if (id < 0) {
		stream_free(t, s);
		t->stats.streams_total--;
		if (id == NGHTTP2_ERR_NOMEM)
			return SP_ERR_NOMEM;
		return sp_diag_set(diag, SP_ERR_TOO_LARGE, "no stream id available");
	}
	s->id = id;
	if (stream_index(t, s) < 0) {
		/* nghttp2 holds the request: cancel it; the stream closes through its callbacks. */
		(void)nghttp2_submit_rst_stream(t->session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
		s->id = 0;
		stream_free(t, s);
		return SP_ERR_NOMEM;
	}
	s->has_provider = 1;
	s->app_knows = 1;
	*stream = id;
	return 0;
}

/* ---- server ---- */

int sp_tunnel_accept(struct sp_tunnel *t, int32_t stream)
{
	struct tunnel_stream *s = stream_find(t, stream);
	if (s == NULL || t->role != SP_TUNNEL_SERVER)
		return SP_ERR_NOT_FOUND;
	if (s->state != STREAM_PENDING)
		return SP_ERR_INVALID;
	return submit_answer(t, s, 200, SP_TUNNEL_REASON_NONE);
}

int sp_tunnel_refuse(struct sp_tunnel *t, int32_t stream, int status, enum sp_tunnel_reason reason)
{
	struct tunnel_stream *s = stream_find(t, stream);
	if (s == NULL || t->role != SP_TUNNEL_SERVER)
		return SP_ERR_NOT_FOUND;
	if (s->state != STREAM_PENDING || status < 400 || status > 599 ||
	    reason == SP_TUNNEL_REASON_NONE || reason >= SP_TUNNEL_REASON_UNKNOWN ||
	    (int)reason < 0)
		return SP_ERR_INVALID;
	return submit_answer(t, s, status, reason);
}

/* ---- both sides ---- */

int sp_tunnel_write(struct sp_tunnel *t, int32_t stream, const void *data, size_t len,
		    size_t *accepted)
{
	if (accepted != NULL)
		*accepted = 0;
	if (accepted == NULL || (data == NULL && len > 0))
		return SP_ERR_INVALID;
	struct tunnel_stream *s = stream_find(t, stream);
	if (s == NULL)
		return SP_ERR_NOT_FOUND;
	if (s->end_requested || s->state == STREAM_REFUSED)
		return SP_ERR_INVALID;
	int r = queue_append(s, t->opts.max_queued, data, len, accepted);
	if (r < 0)
		return r;
	if (*accepted < len && !s->write_blocked)
		s->write_blocked = 1;
	if (*accepted > 0 && s->state == STREAM_OPEN)
		stream_resume(t, s);
	return 0;
}

size_t sp_tunnel_queued(const struct sp_tunnel *t, int32_t stream)
{
	struct tunnel_stream *s = stream_find(t, stream);
	return s != NULL ? s->queue_len : 0;
}

int sp_tunnel_end(struct sp_tunnel *t, int32_t stream)
{
	struct tunnel_stream *s = stream_find(t, stream);
	if (s == NULL)
		return SP_ERR_NOT_FOUND;
	if (s->state == STREAM_REFUSED)
		return SP_ERR_INVALID;
	if (s->end_requested)
		return 0;
	s->end_requested = 1;
	if (s->state == STREAM_OPEN)
		stream_resume(t, s);
	return 0;
}

int sp_tunnel_reset(struct sp_tunnel *t, int32_t stream, uint32_t code)
{
	struct tunnel_stream *s = stream_find(t, stream);
	if (s == NULL)
		return SP_ERR_NOT_FOUND;
	queue_clear(s);
	int rv = nghttp2_submit_rst_stream(t->session, NGHTTP2_FLAG_NONE, stream, code);
	if (rv == NGHTTP2_ERR_NOMEM)
		return SP_ERR_NOMEM;
	return rv == 0 ? 0 : SP_ERR_INVALID;
}

int sp_tunnel_consumed(struct sp_tunnel *t, int32_t stream, size_t n)
{
	struct tunnel_stream *s = stream_find(t, stream);
	if (s == NULL)
		return SP_ERR_NOT_FOUND;
	if (n > s->unconsumed)
		return SP_ERR_INVALID;
	if (n == 0)
		return 0;
	int rv = nghttp2_session_consume(t->session, stream, n);
	if (rv == NGHTTP2_ERR_NOMEM)
		return SP_ERR_NOMEM;
	if (rv != 0)
		return SP_ERR_INVALID;
	s->unconsumed -= n;
	return 0;
}

void *sp_tunnel_stream_user(const struct sp_tunnel *t, int32_t stream)
{
	struct tunnel_stream *s = stream_find(t, stream);
	return s != NULL ? s->user : NULL;
}

int sp_tunnel_set_stream_user(struct sp_tunnel *t, int32_t stream, void *user)
{
	struct tunnel_stream *s = stream_find(t, stream);
	if (s == NULL)
		return SP_ERR_NOT_FOUND;
	s->user = user;
	return 0;
}

int sp_tunnel_shutdown(struct sp_tunnel *t)
{
	if (t == NULL)
		return SP_ERR_INVALID;
	if (t->shutdown)
		return 0;
	int32_t last = nghttp2_session_get_last_proc_stream_id(t->session);
	int rv =
	    nghttp2_submit_goaway(t->session, NGHTTP2_FLAG_NONE, last, NGHTTP2_NO_ERROR, NULL, 0);
	if (rv == NGHTTP2_ERR_NOMEM)
		return SP_ERR_NOMEM;
	if (rv != 0)
		return SP_ERR_INVALID;
	t->shutdown = 1;
	return 0;
}

int sp_tunnel_peer_going_away(const struct sp_tunnel *t)
{
	return t != NULL && t->peer_goaway;
}

void sp_tunnel_get_stats(const struct sp_tunnel *t, struct sp_tunnel_stats *out)
{
	if (out == NULL)
		return;
	memset(out, 0, sizeof(*out));
	if (t != NULL)
		*out = t->stats;
}
