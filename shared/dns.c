/* shared/dns.c — see dns.h; design notes in docs/dns.md. */
#include "shared/dns.h"

#include <string.h>

/* Bytes of one record's fixed part after its owner name: type, class, TTL, rdlength. */
#define RR_FIXED_LEN 10
/* An OPT record with no options: root owner (1) + fixed part. */
#define OPT_RR_LEN (1 + RR_FIXED_LEN)
/* An answer record owned by a compression pointer to the question name. */
#define ADDRESS_RR_LEN(rdlen) (2 + RR_FIXED_LEN + (rdlen))
/*
 * The synthetic SOA: owner pointer, fixed part, RDATA = MNAME pointer, RNAME
 * ("hostmaster" label + pointer), serial, refresh, retry, expire, minimum.
 */
#define SOA_RNAME_LABEL "hostmaster"
#define SOA_RDATA_LEN (2 + 1 + (sizeof(SOA_RNAME_LABEL) - 1) + 2 + 5 * 4)
#define SOA_RR_LEN (2 + RR_FIXED_LEN + SOA_RDATA_LEN)
#define SOA_SERIAL 1u
#define SOA_REFRESH 3600u
#define SOA_RETRY 600u
#define SOA_EXPIRE 86400u
/* The question name always starts right after the header. */
#define QUESTION_NAME_OFFSET SP_DNS_HEADER_LEN
#define POINTER_TO(offset) ((uint16_t)(0xc000u | (unsigned)(offset)))
/* RFC 2181 §8: TTLs are 31-bit. */
#define TTL_MAX 0x7fffffffu

static uint8_t ascii_lower(uint8_t c)
{
	return c >= 'A' && c <= 'Z' ? (uint8_t)(c + ('a' - 'A')) : c;
}

/* Appends one label byte to the presentation text, escaped so the text is unambiguous. */
static size_t text_put_byte(char *text, size_t pos, uint8_t c)
{
	if (c == '.' || c == '\\') {
		text[pos++] = '\\';
		text[pos++] = (char)c;
	} else if (c > 0x20 && c < 0x7f) {
		text[pos++] = (char)ascii_lower(c);
	} else {
		text[pos++] = '\\';
		text[pos++] = (char)('0' + c / 100);
		text[pos++] = (char)('0' + c / 10 % 10);
		text[pos++] = (char)('0' + c % 10);
	}
	return pos;
}

/*
 * Walks the name at `offset`. With out == NULL it only checks and measures (for
 * records the stub skips). Termination: every pointer must point before the start of
 * the run of labels it ends, so the positions jumped to strictly decrease; the hop
 * count and the 255-byte limit bound the work further.
 */
static int name_walk(const uint8_t *msg, size_t len, size_t offset, struct sp_dns_name *out,
                     size_t *end, size_t *wire_len_out, const char **problem)
{
	struct sp_reader r;
	sp_reader_init(&r, msg, len);
	size_t end_pos = 0, run_start = offset, wire_len = 0, text_len = 0;
	unsigned hops = 0, labels = 0;
	int jumped = 0;

	if (sp_reader_seek(&r, offset) < 0) {
		*problem = "name starts past the end of the message";
		return SP_ERR_TRUNCATED;
	}
	for (;;) {
		uint8_t b;
		if (sp_reader_u8(&r, &b) < 0) {
			*problem = "name cut short";
			return SP_ERR_TRUNCATED;
		}
		if ((b & 0xc0) == 0xc0) {
			uint8_t low;
			if (sp_reader_u8(&r, &low) < 0) {
				*problem = "compression pointer cut short";
				return SP_ERR_TRUNCATED;
			}
			size_t target = (size_t)(b & 0x3f) << 8 | low;
			if (!jumped) {
				end_pos = r.pos;
				jumped = 1;
			}
			if (target >= run_start) {
				*problem = "compression pointer does not point backwards";
				return SP_ERR_INVALID;
			}
			if (++hops > SP_DNS_MAX_POINTER_HOPS) {
				*problem = "too many compression pointers";
				return SP_ERR_INVALID;
			}
			(void)sp_reader_seek(&r, target); /* target < run_start <= len */
			run_start = target;
			continue;
		}
		if (b & 0xc0) {
			*problem = "reserved label type";
			return SP_ERR_INVALID;
		}
		if (b == 0)
			break;
		/* This label, its length byte and the root label still to come. */
		if (wire_len + 1 + b + 1 > SP_DNS_NAME_WIRE_MAX) {
			*problem = "name longer than 255 bytes";
			return SP_ERR_INVALID;
		}
		const uint8_t *label;
		if (sp_reader_view(&r, b, &label) < 0) {
			*problem = "label cut short";
			return SP_ERR_TRUNCATED;
		}
		if (out != NULL) {
			out->wire[wire_len] = b;
			memcpy(out->wire + wire_len + 1, label, b);
			if (labels != 0)
				out->text[text_len++] = '.';
			for (size_t i = 0; i < b; i++)
				text_len = text_put_byte(out->text, text_len, label[i]);
		}
		wire_len += 1 + (size_t)b;
		labels++;
	}
	if (!jumped)
		end_pos = r.pos;
	if (out != NULL) {
		out->wire[wire_len] = 0; /* the root label */
		out->wire_len = wire_len + 1;
		if (labels == 0)
			out->text[text_len++] = '.';
		out->text[text_len] = '\0';
		out->text_len = text_len;
		out->labels = labels;
	}
	wire_len++;
	if (wire_len_out != NULL)
		*wire_len_out = wire_len;
	if (end != NULL)
		*end = end_pos;
	return 0;
}

int sp_dns_name_from_wire(const uint8_t *msg, size_t len, size_t offset, struct sp_dns_name *out,
                          size_t *end)
{
	const char *problem = NULL;
	memset(out, 0, sizeof(*out));
	if (end != NULL)
		*end = 0;
	int r = name_walk(msg, len, offset, out, end, NULL, &problem);
	if (r < 0) {
		memset(out, 0, sizeof(*out));
		if (end != NULL)
			*end = 0;
	}
	return r;
}

static int read_header(struct sp_reader *r, struct sp_dns_header *h)
{
	if (sp_reader_remaining(r) < SP_DNS_HEADER_LEN)
		return SP_ERR_TRUNCATED;
	(void)sp_reader_u16be(r, &h->id);
	(void)sp_reader_u16be(r, &h->flags);
	(void)sp_reader_u16be(r, &h->qdcount);
	(void)sp_reader_u16be(r, &h->ancount);
	(void)sp_reader_u16be(r, &h->nscount);
	(void)sp_reader_u16be(r, &h->arcount);
	return 0;
}

/* Reads the question at the reader's position; the reader ends past it. */
static int read_question(struct sp_reader *r, struct sp_dns_question *question,
                         const char **problem)
{
	size_t end;
	int rc = name_walk(r->data, r->len, r->pos, &question->name, &end, NULL, problem);
	if (rc < 0)
		return rc;
	(void)sp_reader_seek(r, end);
	if (sp_reader_u16be(r, &question->qtype) < 0 || sp_reader_u16be(r, &question->qclass) < 0) {
		*problem = "question type or class cut short";
		return SP_ERR_TRUNCATED;
	}
	return 0;
}

/* Checks that an OPT record's RDATA is a sequence of whole option TLVs. */
static int check_edns_options(const uint8_t *rdata, uint16_t rdlen)
{
	struct sp_reader r;
	sp_reader_init(&r, rdata, rdlen);
	while (sp_reader_remaining(&r) != 0) {
		uint16_t code, option_len;
		if (sp_reader_u16be(&r, &code) < 0 || sp_reader_u16be(&r, &option_len) < 0 ||
		    sp_reader_skip(&r, option_len) < 0)
			return SP_ERR_INVALID;
	}
	return 0;
}

/*
 * Skips `count` records of one section, checking each owner name and length. In the
 * additional section (`additional`), records the OPT one into q->edns.
 */
static int skip_records(struct sp_reader *r, unsigned count, int additional,
                        struct sp_dns_query *q)
{
	for (unsigned i = 0; i < count; i++) {
		size_t end, owner_len;
		uint16_t type, rrclass, rdlen;
		uint32_t ttl;
		const uint8_t *rdata;
		/* Owner names are checked and measured, not copied. */
		if (name_walk(r->data, r->len, r->pos, NULL, &end, &owner_len, &q->problem) < 0)
			return SP_ERR_INVALID;
		(void)sp_reader_seek(r, end);
		if (sp_reader_u16be(r, &type) < 0 || sp_reader_u16be(r, &rrclass) < 0 ||
		    sp_reader_u32be(r, &ttl) < 0 || sp_reader_u16be(r, &rdlen) < 0 ||
		    sp_reader_view(r, rdlen, &rdata) < 0) {
			q->problem = "record cut short";
			return SP_ERR_INVALID;
		}
		if (type != SP_DNS_TYPE_OPT)
			continue;
		if (!additional) {
			q->problem = "OPT record outside the additional section";
			return SP_ERR_INVALID;
		}
		if (q->edns.present) {
			q->problem = "more than one OPT record";
			return SP_ERR_INVALID;
		}
		if (owner_len != 1) {
			q->problem = "OPT record not owned by the root";
			return SP_ERR_INVALID;
		}
		if (check_edns_options(rdata, rdlen) < 0) {
			q->problem = "malformed EDNS option";
			return SP_ERR_INVALID;
		}
		q->edns.present = 1;
		q->edns.udp_payload_size = rrclass;
		q->edns.extended_rcode = (uint8_t)(ttl >> 24);
		q->edns.version = (uint8_t)(ttl >> 16);
		q->edns.dnssec_ok = (ttl & 0x8000u) != 0;
		q->edns.options_len = rdlen;
	}
	return 0;
}

int sp_dns_parse_query(const uint8_t *msg, size_t len, struct sp_dns_query *q)
{
	struct sp_reader r;
	int rc;

	memset(q, 0, sizeof(*q));
	q->verdict = SP_DNS_VERDICT_DROP;
	q->reply_limit = SP_DNS_UDP_MIN;
	sp_reader_init(&r, msg, len);
	if (read_header(&r, &q->header) < 0) {
		q->problem = "shorter than a DNS header";
		return SP_ERR_TRUNCATED;
	}
	q->has_header = 1;
	if (q->header.flags & SP_DNS_FLAG_QR) {
		q->problem = "a response, not a query";
		return SP_ERR_INVALID;
	}
	if (SP_DNS_FLAGS_OPCODE(q->header.flags) != SP_DNS_OPCODE_QUERY) {
		q->verdict = SP_DNS_VERDICT_NOTIMP;
		q->problem = "opcode other than QUERY";
		return SP_ERR_UNSUPPORTED;
	}
	q->verdict = SP_DNS_VERDICT_FORMERR;
	if (q->header.qdcount != 1) {
		q->problem = "question count is not 1";
		return SP_ERR_INVALID;
	}
	if (read_question(&r, &q->question, &q->problem) < 0) {
		memset(&q->question, 0, sizeof(q->question));
		return SP_ERR_INVALID;
	}
	q->has_question = 1;
	q->question_end = r.pos;
	rc = skip_records(&r, q->header.ancount, 0, q);
	if (rc == 0)
		rc = skip_records(&r, q->header.nscount, 0, q);
	if (rc == 0)
		rc = skip_records(&r, q->header.arcount, 1, q);
	if (rc < 0) {
		/* An OPT record seen before the fault is not trusted for the FORMERR reply. */
		memset(&q->edns, 0, sizeof(q->edns));
		return SP_ERR_INVALID;
	}
	if (q->edns.present) {
		uint16_t size = q->edns.udp_payload_size;
		q->reply_limit = size > SP_DNS_UDP_MIN ? size : SP_DNS_UDP_MIN;
		if (q->edns.version != 0) {
			q->verdict = SP_DNS_VERDICT_BADVERS;
			q->problem = "EDNS version other than 0";
			return SP_ERR_VERSION;
		}
	}
	q->verdict = SP_DNS_VERDICT_ANSWER;
	q->problem = NULL;
	return 0;
}

/* ---- building replies ---------------------------------------------------------- */

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
	return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return p + 4;
}

/* What one reply holds besides its records. */
struct reply_shape {
	uint16_t rcode;    /* full 12-bit rcode */
	int truncated;
	uint16_t ancount;
	uint16_t nscount;
};

/* Header, question and OPT bytes of the reply to q: what even a TC reply carries. */
static size_t reply_base_len(const struct sp_dns_query *q)
{
	size_t n = SP_DNS_HEADER_LEN;
	if (q->has_question)
		n += q->question.name.wire_len + 4;
	if (q->edns.present)
		n += OPT_RR_LEN;
	return n;
}

/* The most bytes this reply may take: the requester's limit and the room in out. */
static size_t reply_limit(const struct sp_buf *out, const struct sp_dns_query *q)
{
	size_t limit = q->reply_limit != 0 ? q->reply_limit : SP_DNS_UDP_MIN;
	size_t room = out->max - out->len;
	return limit < room ? limit : room;
}

/* Writes header and question; returns where the records go. */
static uint8_t *write_head(uint8_t *p, const struct sp_dns_query *q,
                           const struct reply_shape *shape)
{
	unsigned flags = SP_DNS_FLAG_QR | SP_DNS_FLAG_RA | (shape->rcode & 0xfu);
	flags |= q->header.flags & (0x7800u | SP_DNS_FLAG_RD | SP_DNS_FLAG_CD); /* opcode, RD, CD */
	if (shape->truncated)
		flags |= SP_DNS_FLAG_TC;
	p = put_u16(p, q->header.id);
	p = put_u16(p, (uint16_t)flags);
	p = put_u16(p, q->has_question ? 1 : 0);
	p = put_u16(p, shape->ancount);
	p = put_u16(p, shape->nscount);
	p = put_u16(p, q->edns.present ? 1 : 0);
	if (q->has_question) {
		memcpy(p, q->question.name.wire, q->question.name.wire_len);
		p += q->question.name.wire_len;
		p = put_u16(p, q->question.qtype);
		p = put_u16(p, q->question.qclass);
	}
	return p;
}

/* Our OPT record: version 0, the upper rcode bits, DO echoed, no options. */
static uint8_t *write_opt(uint8_t *p, const struct sp_dns_query *q, uint16_t rcode)
{
	if (!q->edns.present)
		return p;
	*p++ = 0;
	p = put_u16(p, SP_DNS_TYPE_OPT);
	p = put_u16(p, SP_DNS_EDNS_PAYLOAD);
	uint32_t ttl = (uint32_t)(rcode >> 4) << 24 | (q->edns.dnssec_ok ? 0x8000u : 0);
	p = put_u32(p, ttl);
	return put_u16(p, 0);
}

/*
 * Reserves `len` bytes in out for a reply; the caller writes exactly that many at *at
 * and then adds len to out->len. Nothing is committed on failure.
 */
static int start_reply(struct sp_buf *out, size_t len, uint8_t **at)
{
	*at = NULL;
	int rc = sp_buf_reserve(out, len);
	if (rc < 0)
		return rc;
	*at = out->data + out->len;
	return 0;
}

/* Header + question + OPT only: error replies and truncated answers. */
static int build_bare(struct sp_buf *out, const struct sp_dns_query *q, uint16_t rcode,
                      int truncated)
{
	struct reply_shape shape = {.rcode = rcode, .truncated = truncated};
	size_t len = reply_base_len(q);
	uint8_t *p;
	int rc = start_reply(out, len, &p);
	if (rc < 0)
		return rc;
	p = write_head(p, q, &shape);
	write_opt(p, q, rcode);
	out->len += len;
	return 0;
}

static int answerable(const struct sp_dns_query *q)
{
	return q->has_header && q->has_question && q->verdict == SP_DNS_VERDICT_ANSWER;
}

int sp_dns_build_addresses(struct sp_buf *out, const struct sp_dns_query *q, uint16_t rrtype,
                           const uint8_t *addresses, size_t addresses_len, uint32_t ttl)
{
	size_t rdlen;
	if (rrtype == SP_DNS_TYPE_A)
		rdlen = 4;
	else if (rrtype == SP_DNS_TYPE_AAAA)
		rdlen = 16;
	else
		return SP_ERR_INVALID;
	if (!answerable(q) || addresses == NULL || addresses_len == 0 || addresses_len % rdlen != 0)
		return SP_ERR_INVALID;
	uint16_t qtype = q->question.qtype, qclass = q->question.qclass;
	if ((qtype != rrtype && qtype != SP_DNS_TYPE_ANY) ||
	    (qclass != SP_DNS_CLASS_IN && qclass != SP_DNS_CLASS_ANY))
		return SP_ERR_INVALID;
	size_t count = addresses_len / rdlen;
	size_t base = reply_base_len(q);
	/* count is bounded so the sum cannot wrap; any reply past 65535 bytes is TC anyway. */
	if (count > UINT16_MAX || base + count * ADDRESS_RR_LEN(rdlen) > reply_limit(out, q))
		return build_bare(out, q, SP_DNS_RCODE_NOERROR, 1);

	size_t len = base + count * ADDRESS_RR_LEN(rdlen);
	struct reply_shape shape = {.rcode = SP_DNS_RCODE_NOERROR, .ancount = (uint16_t)count};
	uint8_t *p;
	int rc = start_reply(out, len, &p);
	if (rc < 0)
		return rc;
	p = write_head(p, q, &shape);
	if (ttl > TTL_MAX)
		ttl = TTL_MAX;
	for (size_t i = 0; i < count; i++) {
		p = put_u16(p, POINTER_TO(QUESTION_NAME_OFFSET));
		p = put_u16(p, rrtype);
		p = put_u16(p, SP_DNS_CLASS_IN);
		p = put_u32(p, ttl);
		p = put_u16(p, (uint16_t)rdlen);
		memcpy(p, addresses + i * rdlen, rdlen);
		p += rdlen;
	}
	write_opt(p, q, SP_DNS_RCODE_NOERROR);
	out->len += len;
	return 0;
}

/*
 * Finds where `zone` (presentation text) starts inside the question name, as an
 * offset into the name's wire form. SP_ERR_INVALID when it is not the name or a parent.
 */
static int zone_offset_in_question(const struct sp_dns_query *q, const char *zone, size_t *offset)
{
	uint8_t zone_wire[SP_DNS_NAME_WIRE_MAX];
	size_t zone_len;
	if (sp_dns_name_to_wire(zone, strlen(zone), SP_DNS_NAME_ANY_BYTES, zone_wire, &zone_len,
	                        NULL) < 0)
		return SP_ERR_INVALID;
	const struct sp_dns_name *name = &q->question.name;
	for (size_t pos = 0; pos < name->wire_len; pos += (size_t)name->wire[pos] + 1) {
		if (name->wire_len - pos == zone_len &&
		    sp_dns_name_wire_equal(name->wire + pos, zone_len, zone_wire, zone_len)) {
			*offset = pos;
			return 0;
		}
		if (name->wire[pos] == 0)
			break;
	}
	return SP_ERR_INVALID;
}

/*
 * The synthetic SOA of a negative answer: owner and MNAME point at the zone inside
 * the question, RNAME is "hostmaster.<zone>", MINIMUM is the negative TTL.
 */
static uint8_t *write_soa(uint8_t *p, size_t zone_offset, uint32_t negative_ttl)
{
	uint16_t zone_pointer = POINTER_TO(QUESTION_NAME_OFFSET + zone_offset);
	p = put_u16(p, zone_pointer);
	p = put_u16(p, SP_DNS_TYPE_SOA);
	p = put_u16(p, SP_DNS_CLASS_IN);
	p = put_u32(p, negative_ttl);
	p = put_u16(p, (uint16_t)SOA_RDATA_LEN);
	p = put_u16(p, zone_pointer);
	*p++ = (uint8_t)(sizeof(SOA_RNAME_LABEL) - 1);
	memcpy(p, SOA_RNAME_LABEL, sizeof(SOA_RNAME_LABEL) - 1);
	p += sizeof(SOA_RNAME_LABEL) - 1;
	p = put_u16(p, zone_pointer);
	p = put_u32(p, SOA_SERIAL);
	p = put_u32(p, SOA_REFRESH);
	p = put_u32(p, SOA_RETRY);
	p = put_u32(p, SOA_EXPIRE);
	return put_u32(p, negative_ttl);
}

static int build_negative(struct sp_buf *out, const struct sp_dns_query *q, uint16_t rcode,
                          const char *soa_zone, uint32_t negative_ttl)
{
	size_t zone_offset = 0;
	if (!answerable(q))
		return SP_ERR_INVALID;
	if (soa_zone != NULL && zone_offset_in_question(q, soa_zone, &zone_offset) < 0)
		return SP_ERR_INVALID;
	size_t len = reply_base_len(q) + (soa_zone != NULL ? SOA_RR_LEN : 0);
	if (len > reply_limit(out, q))
		return build_bare(out, q, rcode, 1);
	struct reply_shape shape = {.rcode = rcode, .nscount = soa_zone != NULL ? 1 : 0};
	uint8_t *p;
	int rc = start_reply(out, len, &p);
	if (rc < 0)
		return rc;
	p = write_head(p, q, &shape);
	if (negative_ttl > TTL_MAX)
		negative_ttl = TTL_MAX;
	if (soa_zone != NULL)
		p = write_soa(p, zone_offset, negative_ttl);
	write_opt(p, q, rcode);
	out->len += len;
	return 0;
}

int sp_dns_build_nodata(struct sp_buf *out, const struct sp_dns_query *q, const char *soa_zone,
                        uint32_t negative_ttl)
{
	return build_negative(out, q, SP_DNS_RCODE_NOERROR, soa_zone, negative_ttl);
}

int sp_dns_build_nxdomain(struct sp_buf *out, const struct sp_dns_query *q, const char *soa_zone,
                          uint32_t negative_ttl)
{
	return build_negative(out, q, SP_DNS_RCODE_NXDOMAIN, soa_zone, negative_ttl);
}

int sp_dns_build_error(struct sp_buf *out, const struct sp_dns_query *q, uint16_t rcode)
{
	/* A dropped message (a response) is never answered, whatever the caller asks. */
	if (!q->has_header || q->verdict == SP_DNS_VERDICT_DROP || rcode > 0xfff ||
	    (rcode > 0xf && !q->edns.present))
		return SP_ERR_INVALID;
	return build_bare(out, q, rcode, 0);
}

int sp_dns_build_verdict(struct sp_buf *out, const struct sp_dns_query *q)
{
	switch (q->verdict) {
	case SP_DNS_VERDICT_FORMERR:
		return sp_dns_build_error(out, q, SP_DNS_RCODE_FORMERR);
	case SP_DNS_VERDICT_NOTIMP:
		return sp_dns_build_error(out, q, SP_DNS_RCODE_NOTIMP);
	case SP_DNS_VERDICT_BADVERS:
		return sp_dns_build_error(out, q, SP_DNS_RCODE_BADVERS);
	case SP_DNS_VERDICT_ANSWER:
	case SP_DNS_VERDICT_DROP:
		break;
	}
	return SP_ERR_INVALID;
}

/* ---- forwarding helpers -------------------------------------------------------- */

int sp_dns_get_id(const uint8_t *msg, size_t len, uint16_t *id)
{
	struct sp_reader r;
	*id = 0;
	sp_reader_init(&r, msg, len);
	if (sp_reader_remaining(&r) < SP_DNS_HEADER_LEN)
		return SP_ERR_TRUNCATED;
	return sp_reader_u16be(&r, id);
}

int sp_dns_set_id(uint8_t *msg, size_t len, uint16_t id)
{
	if (msg == NULL || len < SP_DNS_HEADER_LEN)
		return SP_ERR_TRUNCATED;
	put_u16(msg, id);
	return 0;
}

int sp_dns_parse_response(const uint8_t *msg, size_t len, struct sp_dns_response *out)
{
	struct sp_reader r;
	const char *problem = NULL;
	memset(out, 0, sizeof(*out));
	sp_reader_init(&r, msg, len);
	if (read_header(&r, &out->header) < 0)
		return SP_ERR_TRUNCATED;
	if (!(out->header.flags & SP_DNS_FLAG_QR) || out->header.qdcount > 1)
		return SP_ERR_INVALID;
	if (out->header.qdcount == 0)
		return 0;
	if (read_question(&r, &out->question, &problem) < 0) {
		memset(&out->question, 0, sizeof(out->question));
		return SP_ERR_INVALID;
	}
	out->has_question = 1;
	return 0;
}

/* ---- names in presentation form ------------------------------------------------ */

static int hostname_char(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

/* Checks one finished label under SP_DNS_NAME_HOSTNAME; `first` is the leftmost label. */
static int hostname_label_ok(const uint8_t *label, size_t len, int first)
{
	if (len == 1 && label[0] == '*')
		return first;
	if (label[0] == '-' || label[len - 1] == '-')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!hostname_char(label[i]))
			return 0;
	return 1;
}

/* Decodes the escape after a backslash at text[*i]; *i ends on its last character. */
static int read_escape(const char *text, size_t text_len, size_t *i, uint8_t *byte)
{
	size_t at = *i + 1;
	if (at >= text_len)
		return SP_ERR_INVALID;
	uint8_t c = (uint8_t)text[at];
	if (c < '0' || c > '9') {
		*byte = c;
		*i = at;
		return 0;
	}
	if (text_len - at < 3)
		return SP_ERR_INVALID;
	unsigned value = 0;
	for (size_t k = 0; k < 3; k++) {
		uint8_t d = (uint8_t)text[at + k];
		if (d < '0' || d > '9')
			return SP_ERR_INVALID;
		value = value * 10 + (unsigned)(d - '0');
	}
	if (value > 255)
		return SP_ERR_INVALID;
	*byte = (uint8_t)value;
	*i = at + 2;
	return 0;
}

int sp_dns_name_to_wire(const char *text, size_t text_len, enum sp_dns_name_rules rules,
                        uint8_t wire[SP_DNS_NAME_WIRE_MAX], size_t *wire_len,
                        struct sp_diag *diag)
{
	size_t pos = 1;         /* next free byte of wire; byte 0 is the first length byte */
	size_t label_start = 0; /* where the current label's length byte goes */
	size_t label_len = 0;
	unsigned labels = 0;

	*wire_len = 0;
	if (text == NULL || text_len == 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "empty name");
	if (text_len == 1 && text[0] == '.') {
		wire[0] = 0;
		*wire_len = 1;
		return 0;
	}
	for (size_t i = 0; i < text_len; i++) {
		uint8_t c = (uint8_t)text[i];
		if (c == '.') {
			if (label_len == 0)
				return sp_diag_set(diag, SP_ERR_INVALID,
				                   "empty label at character %zu", i + 1);
			if (rules == SP_DNS_NAME_HOSTNAME &&
			    !hostname_label_ok(wire + label_start + 1, label_len, labels == 0))
				return sp_diag_set(diag, SP_ERR_INVALID,
				                   "label %u is not a hostname label", labels + 1);
			wire[label_start] = (uint8_t)label_len;
			labels++;
			label_len = 0;
			if (i + 1 == text_len)
				break; /* the trailing dot */
			/* A next label needs its length byte, one byte and the root label. */
			if (pos + 3 > SP_DNS_NAME_WIRE_MAX)
				return sp_diag_set(diag, SP_ERR_TOO_LARGE,
				                   "name longer than 255 bytes");
			label_start = pos++;
			continue;
		}
		if (c == '\\') {
			if (rules == SP_DNS_NAME_HOSTNAME)
				return sp_diag_set(diag, SP_ERR_INVALID,
				                   "escape at character %zu in a hostname", i + 1);
			if (read_escape(text, text_len, &i, &c) < 0)
				return sp_diag_set(diag, SP_ERR_INVALID, "bad escape in name");
		} else if (rules == SP_DNS_NAME_HOSTNAME && !hostname_char(c) && c != '*') {
			return sp_diag_set(diag, SP_ERR_INVALID,
			                   "character %zu is not allowed in a hostname", i + 1);
		}
		if (label_len == SP_DNS_LABEL_MAX)
			return sp_diag_set(diag, SP_ERR_TOO_LARGE, "label %u longer than 63 bytes",
			                   labels + 1);
		/* The byte itself plus the root label must still fit. */
		if (pos + 2 > SP_DNS_NAME_WIRE_MAX)
			return sp_diag_set(diag, SP_ERR_TOO_LARGE, "name longer than 255 bytes");
		wire[pos++] = c;
		label_len++;
	}
	if (label_len != 0) {
		/* The last label, written without a trailing dot. */
		if (rules == SP_DNS_NAME_HOSTNAME &&
		    !hostname_label_ok(wire + label_start + 1, label_len, labels == 0))
			return sp_diag_set(diag, SP_ERR_INVALID, "label %u is not a hostname label",
			                   labels + 1);
		wire[label_start] = (uint8_t)label_len;
	}
	wire[pos++] = 0;
	*wire_len = pos;
	return 0;
}

int sp_dns_name_wire_equal(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len)
{
	if (a_len != b_len)
		return 0;
	/* Length bytes are at most 63, below 'A', so lower-casing leaves them alone. */
	for (size_t i = 0; i < a_len; i++)
		if (ascii_lower(a[i]) != ascii_lower(b[i]))
			return 0;
	return 1;
}

/* The length of a presentation name without its trailing dot (an escaped dot stays). */
static size_t text_len_without_dot(const char *text)
{
	size_t len = strlen(text);
	if (len == 0 || text[len - 1] != '.')
		return len;
	size_t backslashes = 0;
	while (backslashes < len - 1 && text[len - 2 - backslashes] == '\\')
		backslashes++;
	return backslashes % 2 == 0 ? len - 1 : len;
}

int sp_dns_name_text_equal(const char *a, const char *b)
{
	size_t a_len = text_len_without_dot(a), b_len = text_len_without_dot(b);
	if (a_len != b_len)
		return 0;
	for (size_t i = 0; i < a_len; i++)
		if (ascii_lower((uint8_t)a[i]) != ascii_lower((uint8_t)b[i]))
			return 0;
	return 1;
}
