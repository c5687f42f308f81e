/*
 * controller/console.h — the admin web console, served at /admin/.
 *
 * The console is three static files (controller/console/index.html, app.js, app.css)
 * compiled into the binary by cmake/embed_files.cmake; nothing is read from disk at run
 * time and only the names in the table exist, so no request path can reach another file.
 * The page holds no data: the script signs in through /auth/login (client=console), reads
 * /auth/session for the user and CSRF token, and does everything else through /api/v1
 * with the session cookie. The routes are public; each answer carries a strict
 * Content-Security-Policy (scripts and styles from this origin only, no framing).
 *
 * Ownership: the asset table is static, read-only data.
 */
#ifndef SALLYPORT_CONTROLLER_CONSOLE_H
#define SALLYPORT_CONTROLLER_CONSOLE_H

#include <stddef.h>

struct console_asset {
	const char *name;          /* "index.html", "app.js"... (no directories) */
	const char *content_type;  /* "text/html; charset=utf-8"... */
	const unsigned char *data;
	size_t len;
};

/* Generated at build time (console_assets.c); ends with an all-zero entry. */
extern const struct console_asset console_assets[];
extern const size_t console_asset_count;

/* The asset of this name, or NULL. Names are compared exactly. */
const struct console_asset *console_asset_find(const char *name);

/* The Content-Security-Policy every console answer carries. */
extern const char console_csp[];

#endif
