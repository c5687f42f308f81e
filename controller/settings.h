/*
 * controller/settings.h — the controller's configuration schema and its loading:
 * defaults < config file (--config / SALLYPORT_CONFIG) < SALLYPORT_* env < flags.
 */
#ifndef SALLYPORT_CONTROLLER_SETTINGS_H
#define SALLYPORT_CONTROLLER_SETTINGS_H

#include "controller/app.h"
#include "shared/config.h"
#include "shared/log.h"

extern const struct sp_config_key controller_schema[];
extern const size_t controller_schema_count;

/*
 * Applies env, the flags in argv (argv[0] is skipped; every element must be a flag) and
 * the config file they name, then fills `out` and checks the values together (TLS pair,
 * plain HTTP only on loopback unless plain_http is set). `cfg` is initialised here and
 * freed by the caller with sp_config_free, also on failure.
 */
int settings_load(struct sp_config *cfg, int argc, char *const argv[], char *const envp[],
                  struct controller_settings *out, struct sp_log_config *log,
                  struct sp_diag *diag);

#define SETTINGS_RELAY_PUBLIC_MAX 8

/* Checks a relay_public value: 1..8 comma-separated host:port entries (port not 0). */
int settings_relay_public_check(const char *list, struct sp_diag *diag);

/* "sqlite:PATH" → PATH. SP_ERR_UNSUPPORTED for postgres:// (not in this build yet). */
int settings_sqlite_path(const struct controller_settings *s, const char **path,
                         struct sp_diag *diag);

#endif
