/*
 * client/tun_rules.h — the kernel configuration of tun mode, as text (pure).
 *
 * Tun mode routes the synthetic ranges (client/synthetic.h) to a TUN device so that only
 * those addresses leave the normal routing, and lets the kernel's own TCP stack end the
 * flows: an nftables table marks locally sent TCP packets to a synthetic address, a
 * policy-routing rule sends marked packets to a table whose only route is "local", and
 * the prerouting chain hands them to the daemon's transparent listener with TPROXY. The
 * accepted socket's local address is the synthetic address the program dialled. UDP to
 * a synthetic address (but not to the device's own address, where the answers go) is
 * marked and tproxied the same way, to the daemon's transparent UDP socket, which reads
 * the original destination with IP(V6)_RECVORIGDSTADDR.
 *
 *   table inet sallyport: output (route, mangle) marks, prerouting (filter, mangle)
 *   tproxies (only packets coming back through lo); ip rule fwmark MARK lookup TABLE;
 *   ip route add local 0.0.0.0/0 dev lo table TABLE (and the IPv6 twins).
 *
 * Every name here (device, table, mark, routing table) is fixed or validated, and the
 * ranges are re-printed from their parsed form, so nothing a user typed reaches the
 * commands unchecked. The commands are plain lines of space-separated words (no word
 * holds a space) for client/tun_sys.c to run; the nft script is fed to `nft -f -`.
 * Leftovers of a daemon killed with SIGKILL are found by the same names and mark.
 */
#ifndef SALLYPORT_CLIENT_TUN_RULES_H
#define SALLYPORT_CLIENT_TUN_RULES_H
#include <stddef.h>
#include <stdint.h>

#include "shared/cidr.h"
#include "shared/error.h"

#define TUN_RULES_DEFAULT_DEVICE "sallyport0"
#define TUN_RULES_NFT_TABLE "sallyport"
/* "SP": the packet mark and the policy-routing table number. */
#define TUN_RULES_MARK 0x5350u
#define TUN_RULES_ROUTE_TABLE 5350u
/* The device's MTU: as large as lo's, so flows keep loopback-sized segments. */
#define TUN_RULES_MTU 65535u
/* Longest command line and script the generators write, NUL included. */
#define TUN_RULES_LINE_MAX 160
#define TUN_RULES_SCRIPT_MAX 2048
/* Most command lines one list holds. */
#define TUN_RULES_MAX_LINES 12
/* How many times a leftover rule is deleted at most (one per earlier run). */
#define TUN_RULES_RULE_DELETE_TRIES 8

/* What the rules are about. Strings are only read during tun_rules_prepare. */
struct tun_rules_config {
	const char *device;   /* NULL: TUN_RULES_DEFAULT_DEVICE */
	const char *v4_range; /* IPv4 CIDR of the synthetic addresses */
	const char *v6_range; /* IPv6 CIDR, or NULL / "off": IPv4 only */
	uint16_t port_v4;     /* the transparent listeners (on 127.0.0.1 and ::1) */
	uint16_t port_v6;     /* 0 when there is no IPv6 range */
	/* the transparent UDP sockets (same addresses); 0: UDP is not intercepted */
	uint16_t udp_port_v4;
	uint16_t udp_port_v6; /* 0 when there is no IPv6 range or no UDP */
};

/* The validated form (plain data, copied freely). */
struct tun_rules {
	char device[16];
	char v4[SP_CIDR_TEXT_MAX];
	char v6[SP_CIDR_TEXT_MAX]; /* "" without IPv6 */
	/*
	 * The device's own addresses: the last offset of the synthetic pool in each range
	 * (client/synthetic.h never hands it out). Without an address on the device the
	 * kernel would pick no usable source address for flows routed to it.
	 */
	char dev_v4[48];
	char dev_v6[48]; /* "" without IPv6 */
	uint16_t port_v4, port_v6;
	uint16_t udp_port_v4, udp_port_v6; /* 0: no UDP rules */
};

/* One list of command lines. */
struct tun_rules_lines {
	char line[TUN_RULES_MAX_LINES][TUN_RULES_LINE_MAX];
	size_t count;
};

/*
 * Checks and canonicalises cfg into *out (zeroed first, and again on failure): the device name is 1..15 of
 * [a-z0-9_-] and starts with a letter; v4_range an IPv4 CIDR, v6_range an IPv6 CIDR or
 * off; ports non-zero (port_v6 only with a v6 range); UDP ports both zero (no UDP) or
 * one per family in use. SP_ERR_INVALID naming the field.
 */
int tun_rules_prepare(const struct tun_rules_config *cfg, struct tun_rules *out,
		      struct sp_diag *diag);

/* The nft script that creates the table (after any old one is deleted). 0 or SP_ERR_TOO_LARGE. */
int tun_rules_nft_script(const struct tun_rules *r, char *out, size_t size);

/*
 * The `ip` commands that bring the device up and route the ranges to it, then add the
 * policy rules and the local routes (in that order). The device itself is made with
 * TUNSETIFF before they run.
 */
int tun_rules_up_lines(const struct tun_rules *r, struct tun_rules_lines *out);

/*
 * The commands that remove everything tun_rules_up_lines and the script made, by name
 * and mark, whether or not it exists: `nft delete table inet sallyport`, `ip rule del
 * fwmark ... lookup ...` (run again until it fails, at most TUN_RULES_RULE_DELETE_TRIES
 * times: each line that starts with "ip rule del" or "ip -6 rule del" is such a loop),
 * `ip route flush table ...`, `ip link del dev DEVICE`. Each may fail when that part is
 * not there; a success (other than a flush, which succeeds on an empty table) means a
 * leftover was removed. Only r->device is read.
 */
int tun_rules_down_lines(const struct tun_rules *r, struct tun_rules_lines *out);

/*
 * Splits a command line into words in place: argv gets the words and a NULL. Returns the
 * number of words, or 0 (argv[0] NULL) when there are none or more than max-1.
 */
size_t tun_rules_split(char *line, char **argv, size_t max);
#endif
