/*
 * docs/openapi.yaml must describe exactly the admin routes the controller serves: every
 * (method, path) under /api/v1 in controller_routes() appears under `paths:` and the
 * other way round. Routes outside /api/v1 (health, sign-in, client and connector APIs)
 * are described in docs/protocol.md instead.
 *
 * The reader is line based: under `paths:`, a path key is indented two spaces and its
 * methods four, as the file is written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "controller/app.h"

#define MAX_ROUTES 256

struct entry {
	char method[8];
	char path[160];
	int seen;
};

static int in_scope(const char *path)
{
	return strncmp(path, "/api/v1/", 8) == 0;
}

/* {anything} becomes {} so both sides name placeholders alike. */
static void canonical_path(const char *in, char *out, size_t size)
{
	size_t n = 0;
	for (const char *p = in; *p != '\0' && n + 1 < size; p++) {
		out[n++] = *p;
		if (*p == '{') {
			while (*p != '\0' && *p != '}')
				p++;
			if (*p == '\0' || n + 1 >= size)
				break;
			out[n++] = '}';
		}
	}
	out[n] = '\0';
}

static size_t read_openapi(struct entry *entries, size_t max)
{
	const char *dir = getenv("SALLYPORT_SOURCE_DIR");
	char file[4096];
	snprintf(file, sizeof(file), "%s/docs/openapi.yaml", dir != NULL ? dir : ".");
	FILE *f = fopen(file, "r");
	assert_non_null(f);
	char line[1024], path[160] = "";
	int in_paths = 0;
	size_t count = 0;
	static const char *const methods[] = {"get",   "put",  "post",	  "delete",
					      "patch", "head", "options", NULL};
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] != ' ' && line[0] != '\0' && line[0] != '#') {
			in_paths = strcmp(line, "paths:") == 0;
			continue;
		}
		if (!in_paths)
			continue;
		if (strncmp(line, "  /", 3) == 0) {
			size_t len = strlen(line);
			assert_true(len > 3 && line[len - 1] == ':');
			line[len - 1] = '\0';
			char *p = line + 2;
			if (*p == '\'' || *p == '"') { /* a quoted key */
				p++;
				p[strlen(p) - 1] = '\0';
			}
			canonical_path(p, path, sizeof(path));
			continue;
		}
		if (strncmp(line, "    ", 4) == 0 && line[4] != ' ') {
			for (size_t m = 0; methods[m] != NULL; m++) {
				size_t n = strlen(methods[m]);
				if (strncmp(line + 4, methods[m], n) == 0 && line[4 + n] == ':' &&
				    line[5 + n] == '\0' && in_scope(path)) {
					assert_true(count < max);
					for (size_t k = 0; k <= n; k++)
						entries[count].method[k] =
						    (char)(methods[m][k] >= 'a' ? methods[m][k] - 32
										: methods[m][k]);
					snprintf(entries[count].path, sizeof(entries[count].path),
						 "%s", path);
					count++;
				}
			}
		}
	}
	fclose(f);
	return count;
}

static void routes_match_openapi(void **state)
{
	(void)state;
	static struct entry doc[MAX_ROUTES];
	size_t doc_count = read_openapi(doc, MAX_ROUTES);
	size_t count = 0;
	const struct route *routes = controller_routes(&count);
	assert_non_null(routes);
	int missing = 0, served = 0;
	for (size_t i = 0; i < count; i++) {
		if (!in_scope(routes[i].pattern))
			continue;
		served++;
		char path[160];
		canonical_path(routes[i].pattern, path, sizeof(path));
		int found = 0;
		for (size_t k = 0; k < doc_count; k++)
			if (strcmp(doc[k].method, routes[i].method) == 0 &&
			    strcmp(doc[k].path, path) == 0) {
				doc[k].seen++;
				found = 1;
			}
		if (!found) {
			printf("served but not in docs/openapi.yaml: %s %s\n", routes[i].method,
			       routes[i].pattern);
			missing++;
		}
	}
	for (size_t k = 0; k < doc_count; k++)
		if (doc[k].seen != 1) {
			printf("in docs/openapi.yaml %s: %s %s\n",
			       doc[k].seen == 0 ? "but not served" : "more than once",
			       doc[k].method, doc[k].path);
			missing++;
		}
	assert_int_equal(missing, 0);
	assert_int_equal((size_t)served, doc_count);
	assert_true(served >= 50); /* every collection is there, not an empty table */
}

/* The reader itself: placeholders are compared by position, not by name. */
static void placeholders_compare_alike(void **state)
{
	(void)state;
	char out[64];
	canonical_path("/api/v1/groups/{id}/members/{user_id}", out, sizeof(out));
	assert_string_equal(out, "/api/v1/groups/{}/members/{}");
	canonical_path("/api/v1/resources", out, sizeof(out));
	assert_string_equal(out, "/api/v1/resources");
	assert_true(in_scope("/api/v1/access/check"));
	assert_false(in_scope("/healthz"));
	assert_true(in_scope("/api/v1/users"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(placeholders_compare_alike),
	    cmocka_unit_test(routes_match_openapi),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
