/*
 * client/state.h — where the client keeps its device key, session and control socket.
 *
 * The state directory is SALLYPORT_STATE_DIR, else /var/lib/sallyport for root, else
 * $XDG_STATE_HOME/sallyport, else ~/.local/state/sallyport; it is created 0700 (and a
 * looser existing mode is tightened). Files in it:
 *   device.key    the P-256 device key (0600, made at the first sign-in)
 *   session.json  {"controller","session_id","device_id","refresh_token","user":{...}} 0600
 *   control.sock  the daemon's control socket (0600)
 *   daemon.log    the daemon's log when it runs in the background
 *
 * The session file holds the refresh token: written atomically (temp file + rename) with
 * mode 0600, and its text wiped from memory after use.
 */
#ifndef SALLYPORT_CLIENT_STATE_H
#define SALLYPORT_CLIENT_STATE_H
#include <stddef.h>
#include <jansson.h>
#include "shared/error.h"

#define STATE_PATH_MAX 4096

/* Resolves and creates the state directory into dir (STATE_PATH_MAX bytes). */
int state_dir_open(char *dir, size_t size, struct sp_diag *diag);
/* dir + "/" + name into out. SP_ERR_TOO_LARGE when it does not fit. */
int state_path(const char *dir, const char *name, char *out, size_t size);
/* Reads session.json: SP_ERR_NOT_FOUND when signed out. *out (json_decref). */
int state_session_load(const char *dir, json_t **out, struct sp_diag *diag);
/* Writes session.json atomically with mode 0600. */
int state_session_save(const char *dir, const json_t *session, struct sp_diag *diag);
/* Removes session.json (0 when it was absent). */
int state_session_forget(const char *dir);
#endif
