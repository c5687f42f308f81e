/*
 * controller/console.c — serves the embedded admin console (see console.h): GET /admin/
 * (index.html), /admin/app.js and /admin/app.css, each with the console's security
 * headers; GET /admin redirects to /admin/. Any other /admin/... path matches no route
 * and gets the router's 404.
 */
#include <string.h>

#include "controller/app.h"
#include "controller/console.h"
#include "controller/routes.h"

const char console_csp[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
                           "form-action 'self'";

const struct console_asset *console_asset_find(const char *name)
{
	if (name == NULL)
		return NULL;
	for (size_t i = 0; i < console_asset_count; i++)
		if (strcmp(console_assets[i].name, name) == 0)
			return &console_assets[i];
	return NULL;
}

static void add_security_headers(struct http_request *req)
{
	http_add_header(req, "Content-Security-Policy", console_csp);
	http_add_header(req, "X-Frame-Options", "DENY");
	http_add_header(req, "Referrer-Policy", "no-referrer");
	/* The files change with the binary; never let a browser keep an old script. */
	http_add_header(req, "Cache-Control", "no-store");
}

static void serve(struct http_request *req, const char *name)
{
	const struct console_asset *a = console_asset_find(name);
	if (a == NULL) {
		http_reply_error(req, 404, "not_found", "no such path");
		return;
	}
	http_reply_text(req, 200, a->content_type, (const char *)a->data, a->len);
	add_security_headers(req);
}

static void handle_index(struct http_request *req, void *app)
{
	(void)app;
	serve(req, "index.html");
}

static void handle_script(struct http_request *req, void *app)
{
	(void)app;
	serve(req, "app.js");
}

static void handle_style(struct http_request *req, void *app)
{
	(void)app;
	serve(req, "app.css");
}

static void handle_redirect(struct http_request *req, void *app)
{
	(void)app;
	http_reply_text(req, 308, "text/plain; charset=utf-8", "/admin/\n", 8);
	http_add_header(req, "Location", "/admin/");
	add_security_headers(req);
}

const struct route console_routes[] = {
	{"GET", "/admin", (void *)handle_redirect, ROUTE_PUBLIC},
	{"GET", "/admin/", (void *)handle_index, ROUTE_PUBLIC},
	{"GET", "/admin/app.js", (void *)handle_script, ROUTE_PUBLIC},
	{"GET", "/admin/app.css", (void *)handle_style, ROUTE_PUBLIC},
};
const size_t console_route_count = sizeof(console_routes) / sizeof(console_routes[0]);
