/*
 * shared/dns.h — the DNS message codec of the client's DNS stub.
 *
 * The stub answers A/AAAA queries for protected names with synthetic addresses and
 * forwards every other query, unchanged, to the upstream resolvers. This module is the
 * part of that stub which touches DNS bytes: it parses a query, builds the replies the
 * stub sends itself, rewrites message IDs for forwarding, and reads the question of an
 * upstream reply so it can be matched to the query that caused it. It does no I/O.
 *
 * Parsing never allocates and reads only through struct sp_reader; building writes into
 * a caller struct sp_buf (the fixed-storage form on the hot path) and is all-or-nothing:
 * on failure the buffer is left as it was. Every loop is bounded by the message length,
 * by the 255-byte name limit or by SP_DNS_MAX_POINTER_HOPS.
 *
 * Refusals and replies (see docs/dns.md): a message shorter than a header, or with
 * QR=1, is dropped; an opcode other than QUERY gets NOTIMP; a query without exactly one
 * question, with a malformed name, a truncated record, an OPT record outside the
 * additional section, two OPT records or an OPT not owned by the root gets FORMERR; an
 * EDNS version other than 0 gets BADVERS. Any QTYPE and QCLASS parse: the caller decides.
 *
 * Ownership: every struct here is caller-owned, fixed size and plain data (no pointers
 * into the message), usually on the stack; nothing needs freeing. Not thread-safe per
 * struct; the functions themselves keep no state.
 */
#ifndef SALLYPORT_SHARED_DNS_H
#define SALLYPORT_SHARED_DNS_H

#include <stddef.h>
#include <stdint.h>

#include "shared/buf.h"
#include "shared/error.h"

/* Resource record types (RFC 1035, 3596, 2782, 6891, 9460). */
enum sp_dns_type {
	SP_DNS_TYPE_A = 1,
	SP_DNS_TYPE_NS = 2,
	SP_DNS_TYPE_CNAME = 5,
	SP_DNS_TYPE_SOA = 6,
	SP_DNS_TYPE_PTR = 12,
	SP_DNS_TYPE_MX = 15,
	SP_DNS_TYPE_TXT = 16,
	SP_DNS_TYPE_AAAA = 28,
	SP_DNS_TYPE_SRV = 33,
	SP_DNS_TYPE_OPT = 41,
	SP_DNS_TYPE_SVCB = 64,
	SP_DNS_TYPE_HTTPS = 65,
	SP_DNS_TYPE_ANY = 255,
};

enum sp_dns_class {
	SP_DNS_CLASS_IN = 1,
	SP_DNS_CLASS_CH = 3,
	SP_DNS_CLASS_ANY = 255,
};

/* Response codes. Values above 15 need EDNS: the upper 8 bits travel in the OPT record. */
enum sp_dns_rcode {
	SP_DNS_RCODE_NOERROR = 0,
	SP_DNS_RCODE_FORMERR = 1,
	SP_DNS_RCODE_SERVFAIL = 2,
	SP_DNS_RCODE_NXDOMAIN = 3,
	SP_DNS_RCODE_NOTIMP = 4,
	SP_DNS_RCODE_REFUSED = 5,
	SP_DNS_RCODE_BADVERS = 16,
};

#define SP_DNS_OPCODE_QUERY 0

/* Bits of the header's flags word (the 16 bits after the ID). */
#define SP_DNS_FLAG_QR 0x8000u
#define SP_DNS_FLAG_AA 0x0400u
#define SP_DNS_FLAG_TC 0x0200u
#define SP_DNS_FLAG_RD 0x0100u
#define SP_DNS_FLAG_RA 0x0080u
#define SP_DNS_FLAG_AD 0x0020u
#define SP_DNS_FLAG_CD 0x0010u
#define SP_DNS_FLAGS_OPCODE(flags) ((unsigned)((flags) >> 11) & 0xfu)
#define SP_DNS_FLAGS_RCODE(flags) ((unsigned)(flags) & 0xfu)

#define SP_DNS_HEADER_LEN 12
/* A name in wire form, root label included, is at most 255 bytes; a label 63. */
#define SP_DNS_NAME_WIRE_MAX 255
#define SP_DNS_LABEL_MAX 63
/*
 * Presentation form with every byte escaped as \DDD is at most 1003 characters
 * (four labels holding 250 bytes); + 1 for the NUL.
 */
#define SP_DNS_NAME_TEXT_SIZE 1004
/* Compression pointers followed while decoding one name, at most. */
#define SP_DNS_MAX_POINTER_HOPS 32
/* Reply size without EDNS, and the UDP payload size we advertise in our OPT record. */
#define SP_DNS_UDP_MIN 512
#define SP_DNS_EDNS_PAYLOAD 1232

/* The 12-byte header, host byte order. */
struct sp_dns_header {
	uint16_t id;
	uint16_t flags;
	uint16_t qdcount;
	uint16_t ancount;
	uint16_t nscount;
	uint16_t arcount;
};

/*
 * A decoded domain name. `wire` is the uncompressed wire form in the original case
 * (what a reply echoes, so clients using random-case IDs see their own bytes); `text`
 * is the presentation form, lower-cased, without the trailing dot ("." for the root),
 * with '.' and '\' inside a label escaped as "\." and "\\" and any byte outside
 * 0x21..0x7e as "\DDD" — so two different names never share a text.
 */
struct sp_dns_name {
	uint8_t wire[SP_DNS_NAME_WIRE_MAX];
	size_t wire_len; /* 1..255, the root label included */
	char text[SP_DNS_NAME_TEXT_SIZE];
	size_t text_len;
	unsigned labels; /* not counting the root */
};

struct sp_dns_question {
	struct sp_dns_name name;
	uint16_t qtype;
	uint16_t qclass;
};

/* The query's OPT record (RFC 6891), when it had one. */
struct sp_dns_edns {
	int present;
	uint16_t udp_payload_size; /* as sent; below 512 counts as 512 */
	uint8_t extended_rcode;
	uint8_t version;
	int dnssec_ok;             /* the DO bit, echoed in replies */
	uint16_t options_len;      /* bytes of options (checked to be well-formed TLVs) */
};

/* What the stub should do with a query, decided by sp_dns_parse_query. */
enum sp_dns_verdict {
	SP_DNS_VERDICT_ANSWER = 0,  /* well-formed: answer it or forward it */
	SP_DNS_VERDICT_DROP,        /* no header, or a response: send nothing */
	SP_DNS_VERDICT_FORMERR,     /* reply FORMERR (sp_dns_build_verdict) */
	SP_DNS_VERDICT_NOTIMP,      /* reply NOTIMP */
	SP_DNS_VERDICT_BADVERS,     /* reply BADVERS (EDNS version not 0) */
};

/*
 * A parsed query. Caller-owned (usually on the stack), about 1.3 KiB, plain data:
 * it holds copies, never pointers into the message, so the receive buffer may be
 * reused for the reply.
 */
struct sp_dns_query {
	enum sp_dns_verdict verdict;
	const char *problem;           /* static English text when verdict is not ANSWER */
	int has_header;                /* header fields are valid (a reply can be built) */
	struct sp_dns_header header;   /* as received */
	int has_question;              /* question is valid (echoed in every reply) */
	struct sp_dns_question question;
	size_t question_end;           /* offset just past the question section */
	struct sp_dns_edns edns;       /* cleared when the verdict is FORMERR */
	/*
	 * The largest reply the requester accepts: 512 without EDNS, else the advertised
	 * payload size (at least 512). A caller answering over TCP sets it to 65535.
	 */
	size_t reply_limit;
};

/*
 * Parses a query. Returns 0 with verdict ANSWER, or a negative code that matches the
 * verdict: SP_ERR_TRUNCATED (shorter than a header: DROP), SP_ERR_INVALID (FORMERR, or
 * DROP when QR=1), SP_ERR_UNSUPPORTED (opcode not QUERY: NOTIMP), SP_ERR_VERSION
 * (BADVERS). `q->problem` names what was wrong. Whenever `has_header` is set, a reply
 * can be built from q, including for FORMERR. Records other than OPT in the answer,
 * authority and additional sections are skipped after their names are checked.
 * Bytes after the last counted record are ignored.
 */
int sp_dns_parse_query(const uint8_t *msg, size_t len, struct sp_dns_query *q);

/*
 * Appends A or AAAA records (rrtype) for `addresses`, packed 4 or 16 bytes each, with
 * the given TTL (capped at 2^31-1), owned by a compression pointer to the question
 * name. The query must have parsed (verdict ANSWER), with class IN or ANY and a qtype
 * of rrtype or ANY, else SP_ERR_INVALID. When the reply would exceed q->reply_limit (or
 * the room left in out), a reply with TC set and no answers is written instead.
 * Returns 0, SP_ERR_INVALID or SP_ERR_TOO_LARGE (not even the TC reply fits in out).
 */
int sp_dns_build_addresses(struct sp_buf *out, const struct sp_dns_query *q, uint16_t rrtype,
                           const uint8_t *addresses, size_t addresses_len, uint32_t ttl);

/*
 * Appends NOERROR with no answers (NODATA: the name exists, not with that type). When
 * soa_zone is not NULL it must be the question name or one of its parents
 * (case-insensitive; SP_ERR_INVALID otherwise), and the authority section carries a
 * synthetic SOA for that zone with TTL and MINIMUM = negative_ttl, so resolvers cache
 * the absence (RFC 2308). NULL means no SOA: nothing is cached.
 */
int sp_dns_build_nodata(struct sp_buf *out, const struct sp_dns_query *q, const char *soa_zone,
                        uint32_t negative_ttl);
/* Like sp_dns_build_nodata with rcode NXDOMAIN: the name does not exist at all. */
int sp_dns_build_nxdomain(struct sp_buf *out, const struct sp_dns_query *q, const char *soa_zone,
                          uint32_t negative_ttl);

/*
 * Appends a reply with no records but the echoed question (when the query had one)
 * and an OPT record (when the query had a valid one): for SERVFAIL, REFUSED, NOTIMP,
 * FORMERR (header only when the question could not be parsed) and BADVERS. Needs
 * q->has_header and a verdict other than DROP. An rcode above 15 needs the query's OPT
 * record (SP_ERR_INVALID otherwise); rcode must be below 4096.
 */
int sp_dns_build_error(struct sp_buf *out, const struct sp_dns_query *q, uint16_t rcode);

/*
 * Appends the reply that q->verdict asks for (FORMERR, NOTIMP or BADVERS).
 * SP_ERR_INVALID for verdicts ANSWER and DROP, which have no such reply.
 */
int sp_dns_build_verdict(struct sp_buf *out, const struct sp_dns_query *q);

/* Reads the ID of any DNS message. SP_ERR_TRUNCATED when shorter than a header. */
int sp_dns_get_id(const uint8_t *msg, size_t len, uint16_t *id);
/* Rewrites the ID in place (forwarding with a fresh ID, then restoring the client's). */
int sp_dns_set_id(uint8_t *msg, size_t len, uint16_t id);

/* The header and question of a response, for matching it to a forwarded query. */
struct sp_dns_response {
	struct sp_dns_header header;
	int has_question; /* 0 when qdcount is 0 (some error replies carry none) */
	struct sp_dns_question question;
};

/*
 * Parses the header and the question of a response (QR=1) and nothing more.
 * SP_ERR_TRUNCATED when shorter than a header, SP_ERR_INVALID when QR is 0, qdcount
 * is above 1 or the question is malformed or cut short.
 */
int sp_dns_parse_response(const uint8_t *msg, size_t len, struct sp_dns_response *out);

/*
 * Decodes the name at `offset` of msg, following compression pointers, each of which
 * must point before the start of the labels that led to it (so no loops), at most
 * SP_DNS_MAX_POINTER_HOPS of them. Labels longer than 63, names over 255 bytes and the
 * reserved label types 0x40/0x80 are SP_ERR_INVALID; running out of bytes is
 * SP_ERR_TRUNCATED. *end (may be NULL) is the offset just past the name where it
 * started, i.e. past the first pointer.
 */
int sp_dns_name_from_wire(const uint8_t *msg, size_t len, size_t offset, struct sp_dns_name *out,
                          size_t *end);

/* Flags for sp_dns_name_to_wire. */
enum sp_dns_name_rules {
	/*
	 * Letters, digits, '-' and '_' only, no label starting or ending with '-'; a
	 * leading "*" label is allowed for wildcard patterns. No escapes.
	 */
	SP_DNS_NAME_HOSTNAME = 0,
	/* Any bytes; "\." "\\" and "\DDD" escapes as produced by sp_dns_name_from_wire. */
	SP_DNS_NAME_ANY_BYTES = 1,
};

/*
 * Converts presentation text (an optional trailing dot; "." is the root) into wire
 * form in `wire`, keeping the case. SP_ERR_INVALID for an empty text, an empty label,
 * a character the rules forbid or a bad escape; SP_ERR_TOO_LARGE for a label over 63
 * bytes or a name over 255.
 */
int sp_dns_name_to_wire(const char *text, size_t text_len, enum sp_dns_name_rules rules,
                        uint8_t wire[SP_DNS_NAME_WIRE_MAX], size_t *wire_len,
                        struct sp_diag *diag);

/* 1 when two uncompressed wire names are equal, ASCII letters compared without case. */
int sp_dns_name_wire_equal(const uint8_t *a, size_t a_len, const uint8_t *b, size_t b_len);
/*
 * 1 when two presentation names are equal ignoring ASCII case and one trailing dot.
 * Escapes are compared as written: use it on texts from sp_dns_name_from_wire or on
 * hostnames validated with SP_DNS_NAME_HOSTNAME.
 */
int sp_dns_name_text_equal(const char *a, const char *b);

#endif
