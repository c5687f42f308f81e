/*
 * Fuzz target: what browsers and clients send the controller's sign-in routes outside
 * JSON bodies — the native client's loopback redirect_uri, a typed device user code, the
 * device confirmation form, and the admin e-mail list matched against an e-mail. The
 * first byte picks which.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "controller/auth.h"
#include "controller/session.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 4096)
		return 0;
	char *text = malloc(size);
	if (text == NULL)
		return 0;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	switch (data[0] % 4) {
	case 0:
		if (auth_loopback_redirect_ok(text) &&
		    strncmp(text, "http://127.0.0.1:", 17) != 0 && strncmp(text, "http://[::1]:", 13) != 0)
			abort();
		break;
	case 1: {
		char code[9];
		if (auth_user_code_normalize(text, code) && strlen(code) != 8)
			abort();
		break;
	}
	case 2: {
		char value[40];
		if (auth_form_value(data + 1, size - 1, "confirm", value, sizeof(value)) == 0 &&
		    (strlen(value) == 0 || strlen(value) >= sizeof(value) ||
		     strspn(value, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") !=
		             strlen(value)))
			abort();
		break;
	}
	default: {
		/* "LIST\nEMAIL" */
		char *newline = strchr(text, '\n');
		if (newline != NULL) {
			*newline = '\0';
			(void)session_email_listed(text, newline + 1);
		}
		break;
	}
	}
	free(text);
	return 0;
}
