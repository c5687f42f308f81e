/*
 * client/tun_rules.c — tun mode's nft script and ip commands (see tun_rules.h).
 */
#include "client/tun_rules.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

static int device_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 15 || s[0] < 'a' || s[0] > 'z')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static int range_text(const char *text, int family, char *out, size_t size, struct sp_cidr *c)
{
	if (text == NULL || sp_cidr_parse(text, c, NULL) < 0 || c->family != family ||
	    c->prefix_len > (family == AF_INET ? 30 : 126))
		return -1;
	return sp_cidr_format(c, out, size) < 0 ? -1 : 0;
}

/* addr (len bytes, host bits zero) plus `offset` in its low 32 bits, as text. */
static void offset_text(const struct sp_cidr *c, uint32_t offset, char *out, size_t size)
{
	uint8_t a[16];
	memcpy(a, c->addr, 16);
	size_t len = c->family == AF_INET ? 4 : 16;
	for (size_t i = 0; i < 4; i++)
		a[len - 1 - i] |= (uint8_t)(offset >> (8 * i));
	inet_ntop(c->family, a, out, (socklen_t)size);
}

static int prepare(const struct tun_rules_config *cfg, struct tun_rules *out,
		   struct sp_diag *diag)
{
	const char *dev = cfg->device != NULL ? cfg->device : TUN_RULES_DEFAULT_DEVICE;
	if (!device_name_ok(dev))
		return sp_diag_set(diag, SP_ERR_INVALID,
				   "tun device \"%s\": want 1..15 of a-z 0-9 _ -, starting with a letter",
				   dev);
	snprintf(out->device, sizeof(out->device), "%s", dev);
	struct sp_cidr c4, c6;
	if (range_text(cfg->v4_range, AF_INET, out->v4, sizeof(out->v4), &c4) < 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "tun IPv4 range \"%s\": want an IPv4 CIDR",
				   cfg->v4_range != NULL ? cfg->v4_range : "");
	int v6 = cfg->v6_range != NULL && strcmp(cfg->v6_range, "off") != 0;
	if (v6 && range_text(cfg->v6_range, AF_INET6, out->v6, sizeof(out->v6), &c6) < 0)
		return sp_diag_set(diag, SP_ERR_INVALID, "tun IPv6 range \"%s\": want an IPv6 CIDR or off",
				   cfg->v6_range);
	/* the pool is the smaller range, at most 2^32 (as in client/synthetic.c) */
	unsigned bits = 32u - c4.prefix_len;
	if (v6 && 128u - c6.prefix_len < bits)
		bits = 128u - c6.prefix_len;
	uint32_t last = (uint32_t)((((uint64_t)1) << bits) - 1u);
	offset_text(&c4, last, out->dev_v4, sizeof(out->dev_v4));
	if (v6)
		offset_text(&c6, last, out->dev_v6, sizeof(out->dev_v6));
	if (cfg->port_v4 == 0 || (v6 && cfg->port_v6 == 0) || (!v6 && cfg->port_v6 != 0))
		return sp_diag_set(diag, SP_ERR_INVALID, "tun listener ports: one per family in use");
	out->port_v4 = cfg->port_v4;
	out->port_v6 = cfg->port_v6;
	int udp = cfg->udp_port_v4 != 0 || cfg->udp_port_v6 != 0;
	if (udp && (cfg->udp_port_v4 == 0 || (v6 && cfg->udp_port_v6 == 0) ||
		    (!v6 && cfg->udp_port_v6 != 0)))
		return sp_diag_set(diag, SP_ERR_INVALID, "tun UDP ports: one per family in use");
	out->udp_port_v4 = cfg->udp_port_v4;
	out->udp_port_v6 = cfg->udp_port_v6;
	return 0;
}

/* Appends formatted text at *off; SP_ERR_TOO_LARGE when it does not fit. */
static int append(char *out, size_t size, size_t *off, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int append(char *out, size_t size, size_t *off, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out + *off, size - *off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size - *off)
		return SP_ERR_TOO_LARGE;
	*off += (size_t)n;
	return 0;
}

int tun_rules_nft_script(const struct tun_rules *r, char *out, size_t size)
{
	size_t off = 0;
	int rc = 0;
	if (size == 0)
		return SP_ERR_TOO_LARGE;
	out[0] = '\0';
	rc = append(out, size, &off,
		    "table inet %s {\n"
		    "\tchain output {\n"
		    "\t\ttype route hook output priority mangle; policy accept;\n"
		    "\t\tip daddr %s meta l4proto tcp meta mark set 0x%x\n",
		    TUN_RULES_NFT_TABLE, r->v4, TUN_RULES_MARK);
	if (rc == 0 && r->v6[0] != '\0')
		rc = append(out, size, &off, "\t\tip6 daddr %s meta l4proto tcp meta mark set 0x%x\n",
			    r->v6, TUN_RULES_MARK);
	/* UDP: never the device's own address, which the answers are sent to */
	if (rc == 0 && r->udp_port_v4 != 0)
		rc = append(out, size, &off,
			    "\t\tip daddr %s ip daddr != %s meta l4proto udp meta mark set 0x%x\n",
			    r->v4, r->dev_v4, TUN_RULES_MARK);
	if (rc == 0 && r->udp_port_v6 != 0)
		rc = append(out, size, &off,
			    "\t\tip6 daddr %s ip6 daddr != %s meta l4proto udp meta mark set 0x%x\n",
			    r->v6, r->dev_v6, TUN_RULES_MARK);
	if (rc == 0)
		rc = append(out, size, &off,
			    "\t}\n"
			    "\tchain prerouting {\n"
			    "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
			    "\t\tiifname \"lo\" ip daddr %s meta l4proto tcp tproxy ip to 127.0.0.1:%u "
			    "meta mark set 0x%x accept\n",
			    r->v4, r->port_v4, TUN_RULES_MARK);
	if (rc == 0 && r->v6[0] != '\0')
		rc = append(out, size, &off,
			    "\t\tiifname \"lo\" ip6 daddr %s meta l4proto tcp tproxy ip6 to [::1]:%u "
			    "meta mark set 0x%x accept\n",
			    r->v6, r->port_v6, TUN_RULES_MARK);
	if (rc == 0 && r->udp_port_v4 != 0)
		rc = append(out, size, &off,
			    "\t\tiifname \"lo\" ip daddr %s ip daddr != %s meta l4proto udp tproxy ip to "
			    "127.0.0.1:%u meta mark set 0x%x accept\n",
			    r->v4, r->dev_v4, r->udp_port_v4, TUN_RULES_MARK);
	if (rc == 0 && r->udp_port_v6 != 0)
		rc = append(out, size, &off,
			    "\t\tiifname \"lo\" ip6 daddr %s ip6 daddr != %s meta l4proto udp tproxy ip6 to "
			    "[::1]:%u meta mark set 0x%x accept\n",
			    r->v6, r->dev_v6, r->udp_port_v6, TUN_RULES_MARK);
	if (rc == 0)
		rc = append(out, size, &off, "\t}\n}\n");
	if (rc < 0)
		out[0] = '\0';
	return rc;
}

static int add_line(struct tun_rules_lines *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static int add_line(struct tun_rules_lines *l, const char *fmt, ...)
{
	if (l->count == TUN_RULES_MAX_LINES)
		return SP_ERR_TOO_LARGE;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(l->line[l->count], TUN_RULES_LINE_MAX, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= TUN_RULES_LINE_MAX)
		return SP_ERR_TOO_LARGE;
	l->count++;
	return 0;
}

int tun_rules_up_lines(const struct tun_rules *r, struct tun_rules_lines *out)
{
	memset(out, 0, sizeof(*out));
	int rc = add_line(out, "ip addr add %s/32 dev %s", r->dev_v4, r->device);
	if (rc == 0 && r->v6[0] != '\0')
		rc = add_line(out, "ip -6 addr add %s/128 dev %s nodad", r->dev_v6, r->device);
	if (rc == 0)
		rc = add_line(out, "ip link set dev %s mtu %u up", r->device, TUN_RULES_MTU);
	if (rc == 0)
		rc = add_line(out, "ip route add %s dev %s", r->v4, r->device);
	if (rc == 0 && r->v6[0] != '\0')
		rc = add_line(out, "ip -6 route add %s dev %s", r->v6, r->device);
	if (rc == 0)
		rc = add_line(out, "ip rule add fwmark 0x%x lookup %u", TUN_RULES_MARK,
			      TUN_RULES_ROUTE_TABLE);
	if (rc == 0)
		rc = add_line(out, "ip route add local 0.0.0.0/0 dev lo table %u",
			      TUN_RULES_ROUTE_TABLE);
	if (rc == 0 && r->v6[0] != '\0')
		rc = add_line(out, "ip -6 rule add fwmark 0x%x lookup %u", TUN_RULES_MARK,
			      TUN_RULES_ROUTE_TABLE);
	if (rc == 0 && r->v6[0] != '\0')
		rc = add_line(out, "ip -6 route add local ::/0 dev lo table %u",
			      TUN_RULES_ROUTE_TABLE);
	return rc;
}

int tun_rules_down_lines(const struct tun_rules *r, struct tun_rules_lines *out)
{
	memset(out, 0, sizeof(*out));
	int rc = add_line(out, "nft delete table inet %s", TUN_RULES_NFT_TABLE);
	if (rc == 0)
		rc = add_line(out, "ip rule del fwmark 0x%x lookup %u", TUN_RULES_MARK,
			      TUN_RULES_ROUTE_TABLE);
	if (rc == 0)
		rc = add_line(out, "ip -6 rule del fwmark 0x%x lookup %u", TUN_RULES_MARK,
			      TUN_RULES_ROUTE_TABLE);
	if (rc == 0)
		rc = add_line(out, "ip route flush table %u", TUN_RULES_ROUTE_TABLE);
	if (rc == 0)
		rc = add_line(out, "ip -6 route flush table %u", TUN_RULES_ROUTE_TABLE);
	if (rc == 0)
		rc = add_line(out, "ip link del dev %s", r->device);
	return rc;
}

int tun_rules_prepare(const struct tun_rules_config *cfg, struct tun_rules *out,
		      struct sp_diag *diag)
{
	memset(out, 0, sizeof(*out));
	int rc = prepare(cfg, out, diag);
	if (rc < 0)
		memset(out, 0, sizeof(*out));
	return rc;
}

size_t tun_rules_split(char *line, char **argv, size_t max)
{
	size_t n = 0;
	if (max == 0)
		return 0;
	char *p = line;
	for (;;) {
		while (*p == ' ')
			*p++ = '\0';
		if (*p == '\0')
			break;
		if (n + 1 == max) {
			argv[0] = NULL;
			return 0;
		}
		argv[n++] = p;
		while (*p != '\0' && *p != ' ')
			p++;
	}
	argv[n] = NULL;
	return n;
}
