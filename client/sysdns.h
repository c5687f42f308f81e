/*
 * client/sysdns.h — pointing the system resolver at the client's DNS stub, and back.
 *
 * Two ways, chosen at start (docs/client-dns.md, "System DNS"):
 *   - resolv.conf (where systemd-resolved is not running, or the daemon has no network
 *     link of its own): /etc/resolv.conf is replaced by a file naming only the stub, with
 *     the original search/domain/options lines kept. The original is saved in the state
 *     directory with a marker (sysdns.json: our pid and process start time, the SHA-256
 *     of what we wrote, what was there: a file, a symbolic link, or nothing). The stub
 *     forwards to the original nameservers, never to itself. On exit the saved copy is
 *     put back, but only when the file is still the one we wrote; after a crash the next
 *     `up` or `down` finds the marker of a dead process and restores first.
 *   - systemd-resolved (running, and the daemon has a link such as its TUN device):
 *     per-link DNS server and routing domains (`~corp.test`) with resolvectl, reverted
 *     with `resolvectl revert LINK`.
 *
 * The pure part (parse, render, decide, command lines) does no I/O and is unit-tested;
 * client/sysdns_system.c does the file and process work.
 *
 * Ownership: sysdns_prepare allocates struct sysdns; sysdns_restore undoes what
 * sysdns_apply did and frees it (safe on NULL). Loop thread only.
 */
#ifndef SALLYPORT_CLIENT_SYSDNS_H
#define SALLYPORT_CLIENT_SYSDNS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shared/buf.h"
#include "shared/error.h"
#include "shared/resource.h"

/* Where the stub listens when system DNS is on and --dns is not given (not resolved's). */
#define SYSDNS_DEFAULT_LISTEN "127.83.80.53:53"
#define SYSDNS_RESOLV_CONF "/etc/resolv.conf"
/* Test hook only: another path instead of /etc/resolv.conf. */
#define SYSDNS_RESOLV_CONF_ENV "SALLYPORT_RESOLV_CONF"
/* A resolv.conf larger than this is refused (system DNS is then not changed). */
#define SYSDNS_RESOLV_MAX (64 * 1024)
/* Lines longer than this are ignored (neither kept nor used). */
#define SYSDNS_LINE_MAX 1024
#define SYSDNS_NAMESERVERS_MAX 16
#define SYSDNS_KEPT_LINES_MAX 32
/* An address as written, scope id included: "fe80::1%eth0". */
#define SYSDNS_ADDR_MAX 64
#define SYSDNS_MARKER_MAX 8192
#define SYSDNS_DOMAINS_MAX 256
#define SYSDNS_DOMAIN_MAX 254
#define SYSDNS_SHA256_HEX 65

/* ---------- pure core ---------- */

struct sysdns_nameserver {
	char addr[SYSDNS_ADDR_MAX]; /* as written: IPv4, IPv6, IPv6%scope */
	int family;		    /* AF_INET or AF_INET6 */
	int scoped;		    /* has a %scope id */
};

/* What a resolv.conf says that matters here. Plain struct: no heap. */
struct sysdns_resolv {
	struct sysdns_nameserver ns[SYSDNS_NAMESERVERS_MAX];
	size_t ns_count;
	size_t ns_ignored; /* malformed addresses, or beyond SYSDNS_NAMESERVERS_MAX */
	char kept[SYSDNS_KEPT_LINES_MAX][SYSDNS_LINE_MAX]; /* search/domain/options/sortlist */
	size_t kept_count;
	size_t lines_ignored; /* too long, unknown keyword, beyond SYSDNS_KEPT_LINES_MAX */
	int managed;	      /* carries our "Managed by Sallyport" line */
};

/*
 * Parses resolv.conf text (resolv.conf(5): `#` or `;` starts a comment line; keywords
 * nameserver, search, domain, options, sortlist). Never fails on content: bad lines are
 * counted and skipped, as the C library does. SP_ERR_TOO_LARGE above SYSDNS_RESOLV_MAX,
 * SP_ERR_INVALID when the text holds a NUL byte. *out zeroed first.
 */
int sysdns_resolv_parse(const uint8_t *text, size_t len, struct sysdns_resolv *out,
			struct sp_diag *diag);

/*
 * The stub's upstream list ("ADDR:53,[V6]:53,...", c-ares' csv form) from the
 * nameservers of r, without the stub itself (stub_addr, when stub_port is 53) and
 * without scoped IPv6 addresses (c-ares 1.18 cannot take them; counted in *dropped).
 * SP_ERR_NOT_FOUND when nothing is left, SP_ERR_TOO_LARGE when out is too small.
 */
int sysdns_upstreams(const struct sysdns_resolv *r, const char *stub_addr, uint16_t stub_port,
		     char *out, size_t size, size_t *dropped);

/*
 * The resolv.conf we write: the managed-by comment (with `previous`, a few words on what
 * is put back: "saved in PATH"), `nameserver stub_addr`, then the kept lines of orig.
 */
int sysdns_resolv_render(const struct sysdns_resolv *orig, const char *stub_addr,
			 const char *previous, struct sp_buf *out);

/* What /etc/resolv.conf was before we replaced it. */
enum sysdns_kind { SYSDNS_KIND_ABSENT = 1, SYSDNS_KIND_FILE, SYSDNS_KIND_SYMLINK };

/* The marker file (sysdns.json in the state directory). */
struct sysdns_marker {
	int64_t pid;
	uint64_t start;			 /* the process's start time (/proc/PID/stat field 22) */
	char path[1024];		 /* the resolv.conf path we replaced */
	enum sysdns_kind kind;		 /* what was there */
	uint32_t mode;			 /* FILE: its permission bits */
	int64_t uid, gid;		 /* FILE: its owner */
	char target[1024];		 /* SYMLINK: the link's text */
	char written[SYSDNS_SHA256_HEX]; /* SHA-256 (hex) of the file we wrote */
};

/* The marker as JSON into out. */
int sysdns_marker_render(const struct sysdns_marker *m, struct sp_buf *out);
/* Parses a marker; SP_ERR_INVALID (diag names the field) for anything malformed. */
int sysdns_marker_parse(const char *text, size_t len, struct sysdns_marker *out,
			struct sp_diag *diag);

/* The start time (field 22) from /proc/PID/stat text; SP_ERR_INVALID when absent. */
int sysdns_proc_start(const char *stat_text, size_t len, uint64_t *start);

/*
 * Whether the marker's owner still runs: pid_exists (kill(pid, 0) succeeded or EPERM)
 * and, when both are known (non-zero), the start times agree (a reused pid is dead).
 */
int sysdns_owner_alive(const struct sysdns_marker *m, int pid_exists, uint64_t observed_start);

/* The resolv.conf path as it is now. */
struct sysdns_current {
	enum sysdns_kind kind;
	char sha256[SYSDNS_SHA256_HEX]; /* FILE: hash of its bytes */
};

enum sysdns_restore_action {
	SYSDNS_RESTORE = 1, /* still the file we wrote: put the original back */
	SYSDNS_KEEP,	    /* someone replaced or removed it: leave theirs */
};

/* Restore only what is still ours (a regular file with the hash we wrote). */
enum sysdns_restore_action sysdns_decide_restore(const struct sysdns_marker *m,
						 const struct sysdns_current *cur);

/*
 * The routing domains for systemd-resolved from the resource list: each host name and
 * alias as is, each pattern as the suffix after its last wildcard label
 * ("*.corp.test" -> "corp.test"); lower case, no duplicates, no empty or root domain.
 * At most cap (SP_ERR_TOO_LARGE beyond, the first cap kept). CIDR resources add none.
 */
int sysdns_routing_domains(const struct sp_resource *res, size_t n,
			   char (*out)[SYSDNS_DOMAIN_MAX + 1], size_t cap, size_t *count);

/* One resolvectl invocation: argv (NULL-terminated) pointing into the struct's storage. */
#define SYSDNS_ARGV_MAX (SYSDNS_DOMAINS_MAX + 5)
struct sysdns_command {
	char *argv[SYSDNS_ARGV_MAX];
	char storage[SYSDNS_DOMAINS_MAX * (SYSDNS_DOMAIN_MAX + 2) + 256];
};

/* `resolvectl dns LINK ADDR[:PORT]` (the port only when it is not 53). */
int sysdns_resolved_dns_command(const char *link, const char *stub_addr, uint16_t stub_port,
				struct sysdns_command *cmd);
/* `resolvectl domain LINK ~d1 ~d2 ...` (no domains: clears the link's domains). */
int sysdns_resolved_domain_command(const char *link, char (*domains)[SYSDNS_DOMAIN_MAX + 1],
				   size_t n, struct sysdns_command *cmd);
/* `resolvectl default-route LINK false`: only routed names go to the stub. */
int sysdns_resolved_default_route_command(const char *link, struct sysdns_command *cmd);
/* `resolvectl revert LINK`. */
int sysdns_resolved_revert_command(const char *link, struct sysdns_command *cmd);

/* ---------- system (client/sysdns_system.c) ---------- */

struct sysdns;

struct sysdns_options {
	const char *state_dir;
	const char *stub_addr; /* IP literal the stub listens on */
	uint16_t stub_port;
	const char *link; /* the daemon's own network link (TUN), or NULL */
};

/*
 * Before the stub starts: restores what a crashed daemon left (see sysdns_recover),
 * picks the mode, reads the original resolv.conf and works out the stub's upstreams
 * (sysdns_upstreams_text). Changes nothing yet. SP_ERR_EXISTS when another live daemon
 * manages system DNS; SP_ERR_INVALID when the stub is not on port 53 in resolv.conf mode.
 */
int sysdns_prepare(const struct sysdns_options *o, struct sysdns **out, struct sp_diag *diag);
/* The upstreams for the stub ("" when the original named none but the stub). */
const char *sysdns_upstreams_text(const struct sysdns *s);
/* After the stub listens: writes resolv.conf (atomically) or configures resolved. */
int sysdns_apply(struct sysdns *s, struct sp_diag *diag);
/* resolved mode: the routing domains for this resource list (no-op otherwise). */
int sysdns_set_resources(struct sysdns *s, const struct sp_resource *res, size_t n);
/* "resolv.conf", "systemd-resolved" (for status). */
const char *sysdns_mode_name(const struct sysdns *s);
/* Undoes sysdns_apply (logged) and frees s. Safe on NULL. */
void sysdns_restore(struct sysdns *s);

/*
 * With no live owner, restores what the marker in state_dir describes and removes it.
 * *restored: 1 when a marker was handled. SP_ERR_EXISTS when its owner still runs.
 */
int sysdns_recover(const char *state_dir, int *restored, struct sp_diag *diag);
#endif
