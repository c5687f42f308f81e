/*
 * client/tun_sys.h — the system side of tun mode (Linux): the TUN device and running the
 * `ip` and `nft` commands that client/tun_rules.h writes.
 *
 * The device is made with TUNSETIFF and not made persistent, so the kernel removes it
 * (and the routes through it) when the daemon's descriptor closes, even after SIGKILL.
 * The nft table and the policy rules do outlive the process: tun_sys_cleanup removes
 * them by name and mark, and `up` and `down` call it first.
 *
 * The commands are `ip` (iproute2) and `nft` (nftables) run as child processes (looked
 * up in /usr/sbin, /sbin, /usr/bin, /bin), not libmnl/libnftnl: the rule text stays
 * readable, is unit-tested as text, and is what an operator types to check it.
 */
#ifndef SALLYPORT_CLIENT_TUN_SYS_H
#define SALLYPORT_CLIENT_TUN_SYS_H
#include "client/tun_rules.h"
#include "shared/error.h"

/*
 * Opens /dev/net/tun and attaches a TUN device (no packet info) named `name`; *fd gets
 * the descriptor (close it to remove the device). SP_ERR_PERMISSION with a message
 * naming the needed privilege when the caller lacks CAP_NET_ADMIN, SP_ERR_IO otherwise.
 */
int tun_sys_device_open(const char *name, int *fd, struct sp_diag *diag);

/*
 * Runs the up commands and loads the nft script. On failure diag holds the failing
 * command and its error output; the caller then runs tun_sys_cleanup.
 */
int tun_sys_apply(const struct tun_rules *r, struct sp_diag *diag);

/*
 * Removes the table, the rules, the local routes and the device, whichever exist.
 * *removed (may be NULL) gets how many of them were there. Never fails: parts that are
 * not there are skipped.
 */
void tun_sys_cleanup(const struct tun_rules *r, int *removed);
#endif
