/*
 * client/daemon_tun.c — tun mode of the daemon: transparent listeners, the TUN device and
 * its kernel rules (client/tun_rules.h, client/tun_sys.h), and the reverse lookup that
 * turns an accepted connection's local (synthetic) address into the protected name.
 *
 * Connections come in through the kernel's own TCP stack: TPROXY hands every TCP SYN to
 * a synthetic address to the listener on 127.0.0.1 (or ::1), and getsockname on the
 * accepted socket gives the address and port the program dialled. From there a flow is
 * exactly a loopback-mode flow (client/daemon_flows.c). UDP is tproxied the same way to
 * the transparent UDP sockets of client/daemon_udp.c. The device only carries the
 * routes: packets that reach it (ICMP to a synthetic address) are never read and so
 * dropped, and nothing outside the ranges is routed differently.
 *
 * Ownership: everything here hangs off struct daemon; tun_stop releases it (event-loop
 * thread only).
 */
#include "client/daemon_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "client/tun_sys.h"
#include "shared/log.h"

static struct synthetic *tun_table(struct daemon *d)
{
	return d->stub != NULL ? dns_stub_synthetic(d->stub) : d->syn_own;
}

/* A listening TCP socket on addr:0 with IP(V6)_TRANSPARENT; *port gets the kernel's pick. */
static int transparent_listener(int family, int *fd_out, uint16_t *port, struct sp_diag *diag)
{
	*fd_out = -1;
	*port = 0;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	socklen_t sl;
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		sl = sizeof(*a);
	}
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return sp_diag_set(diag, SP_ERR_IO, "tun listener: socket: %s", strerror(errno));
	int one = 1;
	int rc = family == AF_INET
		     ? setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))
		     : setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one));
	if (rc == -1) {
		int e = errno;
		close(fd);
		return sp_diag_set(diag, e == EPERM ? SP_ERR_PERMISSION : SP_ERR_IO,
				   "tun listener: IP_TRANSPARENT: %s%s", strerror(e),
				   e == EPERM ? " (tun mode needs root or CAP_NET_ADMIN)" : "");
	}
	if (family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) == -1 || listen(fd, 128) == -1) {
		int e = errno;
		close(fd);
		return sp_diag_set(diag, SP_ERR_IO, "tun listener: %s", strerror(e));
	}
	sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1) {
		int e = errno;
		close(fd);
		return sp_diag_set(diag, SP_ERR_IO, "tun listener: getsockname: %s", strerror(e));
	}
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					: ((struct sockaddr_in6 *)&ss)->sin6_port);
	*fd_out = fd;
	return 0;
}

int tun_start(struct daemon *d, struct sp_diag *diag)
{
	const struct daemon_options *o = d->o;
	const char *v4 = o->tun_range != NULL ? o->tun_range : SYNTHETIC_DEFAULT_V4;
	const char *v6 = o->tun_range6 != NULL ? o->tun_range6 : SYNTHETIC_DEFAULT_V6;
	int has_v6 = strcmp(v6, "off") != 0;
	int rc = 0;
	/* the names first: a bad device name or range must not reach any command */
	struct tun_rules_config rc_cfg = {.device = o->tun_device, .v4_range = v4,
					  .v6_range = v6, .port_v4 = 1, .port_v6 = has_v6 ? 1 : 0};
	rc = tun_rules_prepare(&rc_cfg, &d->tun, diag);
	if (rc < 0)
		return rc;
	/* leftovers of a run that was killed: same names and mark */
	int removed = 0;
	tun_sys_cleanup(&d->tun, &removed);
	if (removed > 0)
		SP_LOG(SP_LOG_WARN, "tun mode: removed leftovers of an earlier run",
		       SP_LOG_INT("items", removed), SP_LOG_STR("device", d->tun.device));
	rc = tun_sys_device_open(d->tun.device, &d->tun_fd, diag);
	if (rc < 0)
		return rc;
	d->tun_applied = 1;
	if (d->stub == NULL) {
		uint64_t seed = 0;
		(void)RAND_bytes((unsigned char *)&seed, sizeof(seed));
		struct synthetic_config sc = {.v4_range = v4, .v6_range = has_v6 ? v6 : NULL,
					      .hash_seed = seed};
		rc = synthetic_new(&sc, &d->syn_own, diag);
		if (rc < 0)
			goto fail;
	}
	uint16_t ports[2] = {0, 0}, uports[2] = {0, 0};
	for (int k = 0; k < (has_v6 ? 2 : 1); k++) {
		int fd = -1;
		rc = transparent_listener(k == 0 ? AF_INET : AF_INET6, &fd, &ports[k], diag);
		if (rc == 0) {
			rc = listen_adopt(d, FLOW_TUN, fd, k == 0 ? "127.0.0.1" : "::1", ports[k], diag);
			if (rc < 0)
				close(fd);
		}
		if (rc == 0)
			rc = udp_start(d, k == 0 ? AF_INET : AF_INET6, &uports[k], diag);
		if (rc < 0)
			goto fail;
	}
	char device[sizeof(d->tun.device)];
	memcpy(device, d->tun.device, sizeof(device)); /* prepare zeroes d->tun first */
	struct tun_rules_config cfg = {.device = device, .v4_range = v4,
				       .v6_range = has_v6 ? v6 : NULL, .port_v4 = ports[0],
				       .port_v6 = ports[1], .udp_port_v4 = uports[0],
				       .udp_port_v6 = uports[1]};
	rc = tun_rules_prepare(&cfg, &d->tun, diag);
	if (rc == 0)
		rc = tun_sys_apply(&d->tun, diag);
	if (rc < 0)
		goto fail;
	SP_LOG(SP_LOG_INFO, "tun mode up", SP_LOG_STR("device", d->tun.device),
	       SP_LOG_STR("v4", d->tun.v4), SP_LOG_STR("v6", d->tun.v6),
	       SP_LOG_UINT("port", ports[0]));
	return 0;
fail:
	tun_stop(d);
	return rc;
}

void tun_stop(struct daemon *d)
{
	if (d->tun_applied) {
		tun_sys_cleanup(&d->tun, NULL);
		d->tun_applied = 0;
	}
	if (d->tun_fd != -1) {
		close(d->tun_fd);
		d->tun_fd = -1;
	}
	udp_stop(d);
	synthetic_free(d->syn_own);
	d->syn_own = NULL;
}

void tun_sync(struct daemon *d)
{
	struct synthetic *s = tun_table(d);
	if (s == NULL)
		return;
	for (size_t i = 0; i < d->nres; i++) {
		const struct sp_resource *r = &d->resources[i];
		const char *names[2] = {
		    r->address.kind == SP_RESOURCE_ADDRESS_NAME ? r->address.name : NULL, r->alias};
		for (int k = 0; k < 2; k++) {
			struct synthetic_mapping m;
			if (names[k] != NULL &&
			    synthetic_assign(s, names[k], strlen(names[k]), (int64_t)i + 1, &m) < 0)
				SP_LOG(SP_LOG_WARN, "tun mode: no synthetic address",
				       SP_LOG_STR("name", names[k]));
		}
	}
}

int tun_addr_target(struct daemon *d, int family, const uint8_t *addr, char *host,
		    size_t hsize)
{
	char name[SYNTHETIC_NAME_MAX + 1];
	int64_t rid = 0;
	struct synthetic *s = tun_table(d);
	host[0] = '\0';
	if (s == NULL || synthetic_reverse(s, family, addr, name, sizeof(name), &rid) < 0) {
		inet_ntop(family, addr, host, (socklen_t)hsize);
		return SP_ERR_NOT_FOUND;
	}
	if (strlen(name) >= hsize)
		return SP_ERR_TOO_LARGE;
	memcpy(host, name, strlen(name) + 1);
	return 0;
}

int tun_flow_target(struct daemon *d, evutil_socket_t fd, char *host, size_t hsize,
		    uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	host[0] = '\0';
	*port = 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
		return SP_ERR_IO;
	int family = ss.ss_family;
	const uint8_t *addr;
	if (family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
		addr = (const uint8_t *)&a->sin_addr;
		*port = ntohs(a->sin_port);
	} else if (family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
		addr = (const uint8_t *)&a->sin6_addr;
		*port = ntohs(a->sin6_port);
	} else {
		return SP_ERR_INVALID;
	}
	return tun_addr_target(d, family, addr, host, hsize);
}

json_t *tun_status(struct daemon *d)
{
	json_t *names = json_array();
	struct synthetic *s = tun_table(d);
	for (size_t i = 0; i < d->nres && s != NULL; i++) {
		const struct sp_resource *r = &d->resources[i];
		const char *n[2] = {
		    r->address.kind == SP_RESOURCE_ADDRESS_NAME ? r->address.name : NULL, r->alias};
		for (int k = 0; k < 2; k++) {
			struct synthetic_mapping m;
			if (n[k] == NULL || synthetic_find(s, n[k], strlen(n[k]), &m) < 0)
				continue;
			char a4[INET_ADDRSTRLEN], a6[INET6_ADDRSTRLEN] = "";
			inet_ntop(AF_INET, m.v4, a4, sizeof(a4));
			if (m.has_v6)
				inet_ntop(AF_INET6, m.v6, a6, sizeof(a6));
			json_array_append_new(names, json_pack("{s:s, s:s, s:s}", "name", n[k], "v4",
							       a4, "v6", a6));
		}
	}
	return json_pack("{s:s, s:s, s:s, s:I, s:o}", "device", d->tun.device, "v4_range",
			 d->tun.v4, "v6_range", d->tun.v6, "mark", (json_int_t)TUN_RULES_MARK,
			 "names", names);
}
