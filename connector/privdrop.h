/*
 * connector/privdrop.h — the connector gives up root once it holds what needs root.
 *
 * Started as root, the connector opens its state dir and listeners, hands the state dir to
 * the user named by SALLYPORT_USER, then becomes that user with no supplementary groups,
 * an empty capability bounding set, no capabilities at all and PR_SET_NO_NEW_PRIVS, and
 * checks the result (setuid(0) must fail; /proc/self/status must show the user's ids and
 * zero capability sets) before it talks to anyone. Started as root without a user it
 * refuses, unless SALLYPORT_ALLOW_ROOT says running as root is meant (docs/connector.md).
 *
 * The decision and the /proc/self/status parser are pure (tests/unit/connector/
 * test_privdrop.c); connector_privdrop_apply does the system calls. All run on the main
 * thread before any other thread exists.
 */
#ifndef SALLYPORT_CONNECTOR_PRIVDROP_H
#define SALLYPORT_CONNECTOR_PRIVDROP_H

#include <stdint.h>
#include <sys/types.h>

#include "shared/error.h"

enum connector_privdrop_action {
	CONNECTOR_PRIVDROP_NONE = 0, /* not root: nothing to give up */
	CONNECTOR_PRIVDROP_SWITCH,   /* root with a user: become that user */
	CONNECTOR_PRIVDROP_STAY_ROOT /* root, SALLYPORT_ALLOW_ROOT set and no user */
};

/*
 * What to do, from the effective uid, the configured user name (NULL when unset) and the
 * opt-out. SP_ERR_INVALID with a person's message for root without a user or opt-out.
 */
int connector_privdrop_decide(uid_t euid, const char *user, int allow_root,
			      enum connector_privdrop_action *out, struct sp_diag *diag);

/* The identity and capability lines of /proc/<pid>/status. */
struct connector_proc_status {
	uint64_t uid[4], gid[4]; /* real, effective, saved, filesystem */
	uint64_t cap_inh, cap_prm, cap_eff, cap_bnd, cap_amb;
	int no_new_privs;
	unsigned seen; /* bit per line found: Uid Gid CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs */
};
#define CONNECTOR_PROC_STATUS_ALL 0xffu

/*
 * Parses the text of /proc/<pid>/status (len bytes, need not be NUL-terminated). Returns 0
 * when every line above was found and well formed, else SP_ERR_INVALID.
 */
int connector_proc_status_parse(const char *text, size_t len, struct connector_proc_status *out);

/*
 * 0 when st shows exactly uid and gid in all four slots, every capability set empty and
 * no_new_privs on; else SP_ERR_PERMISSION with a message naming the first thing wrong.
 */
int connector_privdrop_check(const struct connector_proc_status *st, uid_t uid, gid_t gid,
			     struct sp_diag *diag);

/* The uid and primary gid of a user name; refuses a name that maps to uid 0 or gid 0. */
int connector_privdrop_lookup(const char *user, uid_t *uid, gid_t *gid, struct sp_diag *diag);

/*
 * Hands the state dir and the files the connector keeps there to uid:gid (symlinks are
 * not followed; files that do not exist yet are skipped).
 */
int connector_privdrop_chown_state(const char *dir, uid_t uid, gid_t gid, struct sp_diag *diag);

/*
 * Becomes uid:gid for good: no supplementary groups, empty bounding/ambient/inheritable
 * sets, no_new_privs, then verifies (setuid(0) fails, /proc/self/status is as
 * connector_privdrop_check wants). Any failure is returned and the caller must exit.
 */
int connector_privdrop_apply(uid_t uid, gid_t gid, struct sp_diag *diag);

/* Sets PR_SET_NO_NEW_PRIVS only (the connector never needs to gain privileges). */
int connector_privdrop_no_new_privs(struct sp_diag *diag);

#endif
