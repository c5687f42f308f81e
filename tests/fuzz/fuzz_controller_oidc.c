/*
 * Fuzz target: what an identity provider sends the controller outside the ID token —
 * the discovery document and the token endpoint's answer. The first byte picks which.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "controller/oidc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	struct sp_diag diag;
	if (data[0] & 1) {
		struct oidc_provider p;
		if (oidc_discovery_parse(text, len, "http://127.0.0.1:9000", &p, &diag) == 0) {
			/* A parsed provider must have produced acceptable endpoints only. */
			if (!oidc_url_is_acceptable(p.authorization_endpoint) ||
			    !oidc_url_is_acceptable(p.token_endpoint) ||
			    !oidc_url_is_acceptable(p.jwks_uri))
				abort();
			struct oidc_auth_request req = {.client_id = "c", .redirect_uri = "http://127.0.0.1/cb",
			                                .state = "s", .nonce = "n", .code_challenge = "x"};
			struct sp_buf url;
			sp_buf_init(&url, 8192);
			(void)oidc_authorization_url(&p, &req, &url);
			sp_buf_free(&url);
		}
	} else {
		struct oidc_token_response t;
		if (oidc_token_response_parse(text, len, &t, &diag) == 0 &&
		    (t.id_token == NULL || t.access_token == NULL))
			abort();
		oidc_token_response_clear(&t);
	}
	return 0;
}
