-- Sallyport schema version 1: everything the controller stores.
--
-- Conventions (docs/schema.md explains each):
--   * ids are TEXT: 32 lower-case hex digits, 128 random bits made by the controller.
--     Exceptions: signing_keys.kid (a JOSE key id), service_accounts.user_id (the id of
--     its users row), and the INTEGER sequence ids of audit_events, flow_events, changes.
--   * times are INTEGER unix seconds (UTC); durations say their unit (_s, _ms).
--   * booleans are INTEGER 0 or 1; enums are TEXT with a CHECK listing the values.
--   * JSON is TEXT in canonical form, checked with json_valid.
--   * hashes of secrets are lower-case hex SHA-256 (64 digits) of the secret's bytes;
--     the secrets themselves are never stored.
--   * every table is STRICT; every text column has a length cap.
--   * deletion: memberships, policies and credentials cascade from their owner;
--     remote networks cannot be deleted while connectors or resources use them;
--     audit_events and flow_events have no foreign keys and keep their history.
--   * the changes table is filled by the triggers at the end of this file, so the
--     change feed also sees rows removed by ON DELETE CASCADE.
--
-- shared/migrate.c runs this file in one transaction with foreign keys off and checks
-- PRAGMA foreign_key_check before committing; it must not contain BEGIN or COMMIT.

-- Settings that admins change at run time through the API. Exactly one row (id = 1);
-- settings read from the config file do not live here.
CREATE TABLE settings (
	id INTEGER PRIMARY KEY CHECK (id = 1),
	-- identifies this installation (for example in metrics and support bundles)
	instance_id TEXT NOT NULL
		CHECK (length(instance_id) = 32 AND instance_id NOT GLOB '*[^0-9a-f]*'),
	-- 'auto': a new device is approved at sign-in; 'admin': it waits for an admin
	device_approval TEXT NOT NULL DEFAULT 'auto' CHECK (device_approval IN ('auto', 'admin')),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	updated_at INTEGER NOT NULL CHECK (updated_at >= 0)
) STRICT;

-- People (provisioned at their first OIDC sign-in) and service accounts (kind 'service',
-- with a service_accounts row; they sign in with a key, not through the IdP).
CREATE TABLE users (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	kind TEXT NOT NULL DEFAULT 'person' CHECK (kind IN ('person', 'service')),
	issuer TEXT CHECK (length(issuer) BETWEEN 1 AND 1024),
	subject TEXT CHECK (length(subject) BETWEEN 1 AND 255),
	-- stored lower-cased by the controller; not unique (two issuers may share one)
	email TEXT CHECK (length(email) BETWEEN 3 AND 320),
	email_verified INTEGER NOT NULL DEFAULT 0 CHECK (email_verified IN (0, 1)),
	display_name TEXT CHECK (length(display_name) BETWEEN 1 AND 256),
	-- console role of a person; service accounts are always 'user'
	role TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'auditor', 'admin')),
	disabled INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	updated_at INTEGER NOT NULL CHECK (updated_at >= 0),
	last_sign_in_at INTEGER CHECK (last_sign_in_at >= 0),
	CHECK ((kind = 'person' AND issuer IS NOT NULL AND subject IS NOT NULL)
		OR (kind = 'service' AND issuer IS NULL AND subject IS NULL AND role = 'user')),
	UNIQUE (issuer, subject)
) STRICT;
CREATE INDEX users_by_email ON users (email);

-- Groups are made by admins ('local') or mirrored from the IdP's groups claim ('idp').
CREATE TABLE groups (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 256),
	source TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'idp')),
	description TEXT CHECK (length(description) <= 1024),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	updated_at INTEGER NOT NULL CHECK (updated_at >= 0)
) STRICT;

-- Who is in which group. 'idp' rows are rewritten at each sign-in from the groups claim;
-- 'local' rows only by admins. The primary key also serves lookups by user.
CREATE TABLE memberships (
	user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
	source TEXT NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'idp')),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	PRIMARY KEY (user_id, group_id)
) STRICT;
CREATE INDEX memberships_by_group ON memberships (group_id);

-- A private network reached through its connectors.
CREATE TABLE remote_networks (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
	description TEXT CHECK (length(description) <= 1024),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	updated_at INTEGER NOT NULL CHECK (updated_at >= 0)
) STRICT;

-- A connector exists from its enrollment on; its key is pinned by clients through the
-- SPKI SHA-256 digest in the signed resource list. Deleting a network that still has
-- connectors is refused: they are revoked and deleted one by one, each audited.
CREATE TABLE connectors (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	network_id TEXT NOT NULL REFERENCES remote_networks (id) ON DELETE RESTRICT,
	name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
	public_key_digest TEXT NOT NULL UNIQUE
		CHECK (length(public_key_digest) = 64 AND public_key_digest NOT GLOB '*[^0-9a-f]*'),
	public_key_pem TEXT NOT NULL CHECK (length(public_key_pem) BETWEEN 1 AND 16384),
	state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled', 'revoked')),
	-- host:port for direct tunnels (SALLYPORT_DIRECT_LISTEN as seen by clients), or NULL
	direct_address TEXT CHECK (length(direct_address) BETWEEN 1 AND 300),
	version TEXT CHECK (length(version) BETWEEN 1 AND 64),
	enrolled_at INTEGER NOT NULL CHECK (enrolled_at >= 0),
	last_seen_at INTEGER CHECK (last_seen_at >= 0),
	updated_at INTEGER NOT NULL CHECK (updated_at >= 0),
	UNIQUE (network_id, name)
) STRICT;

-- One-time tokens that let a new connector enroll into a network. Only the hash is kept.
CREATE TABLE connector_enrollment_tokens (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	network_id TEXT NOT NULL REFERENCES remote_networks (id) ON DELETE CASCADE,
	token_hash TEXT NOT NULL UNIQUE
		CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	expires_at INTEGER NOT NULL CHECK (expires_at > created_at),
	used_at INTEGER CHECK (used_at >= 0)
) STRICT;
CREATE INDEX connector_enrollment_tokens_by_network ON connector_enrollment_tokens (network_id);

-- What users may reach. Port specs are canonical JSON: "all", "none" or an array of
-- strings "N" / "N-M" (docs/protocol.md). UNIQUE (network_id, name) also serves lookups
-- by network. An alias is a DNS name the client answers, so it is unique everywhere.
CREATE TABLE resources (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	network_id TEXT NOT NULL REFERENCES remote_networks (id) ON DELETE RESTRICT,
	name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
	address TEXT NOT NULL CHECK (length(address) BETWEEN 1 AND 255),
	alias TEXT UNIQUE CHECK (length(alias) BETWEEN 1 AND 253),
	tcp_ports TEXT NOT NULL DEFAULT '"none"'
		CHECK (length(tcp_ports) <= 4096 AND json_valid(tcp_ports)
			AND json_type(tcp_ports) IN ('text', 'array')),
	udp_ports TEXT NOT NULL DEFAULT '"none"'
		CHECK (length(udp_ports) <= 4096 AND json_valid(udp_ports)
			AND json_type(udp_ports) IN ('text', 'array')),
	icmp INTEGER NOT NULL DEFAULT 0 CHECK (icmp IN (0, 1)),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	updated_at INTEGER NOT NULL CHECK (updated_at >= 0),
	UNIQUE (network_id, name)
) STRICT;

-- A group may reach a resource. Default deny: no row, no access. The unique pair also
-- serves lookups by group.
CREATE TABLE policies (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	group_id TEXT NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
	resource_id TEXT NOT NULL REFERENCES resources (id) ON DELETE CASCADE,
	require_mfa INTEGER NOT NULL DEFAULT 0 CHECK (require_mfa IN (0, 1)),
	-- 0: no limit; otherwise the IdP authentication must be at most this old
	max_session_age_s INTEGER NOT NULL DEFAULT 0
		CHECK (max_session_age_s BETWEEN 0 AND 31622400),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	updated_at INTEGER NOT NULL CHECK (updated_at >= 0),
	UNIQUE (group_id, resource_id)
) STRICT;
CREATE INDEX policies_by_resource ON policies (resource_id);

-- A device key pair a user (or service account) signs in with. The thumbprint is the
-- RFC 7638 JWK SHA-256 thumbprint, base64url without padding (43 characters), as in
-- the grants' cnf.jkt. UNIQUE (user_id, id) serves lookups by user and lets sessions
-- refer to (user, device) together.
CREATE TABLE devices (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	public_key_thumbprint TEXT NOT NULL UNIQUE
		CHECK (length(public_key_thumbprint) = 43
			AND public_key_thumbprint NOT GLOB '*[^A-Za-z0-9_-]*'),
	public_key_pem TEXT NOT NULL CHECK (length(public_key_pem) BETWEEN 1 AND 16384),
	name TEXT CHECK (length(name) BETWEEN 1 AND 256),
	state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'approved', 'blocked')),
	first_seen_at INTEGER NOT NULL CHECK (first_seen_at >= 0),
	last_seen_at INTEGER NOT NULL CHECK (last_seen_at >= 0),
	updated_at INTEGER NOT NULL CHECK (updated_at >= 0),
	UNIQUE (user_id, id)
) STRICT;

-- A signed-in session of one user on one device. The composite foreign key makes a
-- session on another user's device impossible. amr is the IdP's JSON array.
CREATE TABLE sessions (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	device_id TEXT NOT NULL,
	auth_method TEXT NOT NULL CHECK (auth_method IN ('oidc', 'device_code', 'service_key')),
	auth_time INTEGER NOT NULL CHECK (auth_time >= 0),
	amr TEXT NOT NULL DEFAULT '[]'
		CHECK (length(amr) <= 1024 AND json_valid(amr) AND json_type(amr) = 'array'),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	last_used_at INTEGER NOT NULL CHECK (last_used_at >= 0),
	expires_at INTEGER NOT NULL CHECK (expires_at > created_at),
	revoked_at INTEGER CHECK (revoked_at >= 0),
	revoke_reason TEXT CHECK (revoke_reason IN ('sign_out', 'admin', 'user_disabled',
		'device_blocked', 'refresh_token_reuse', 'key_revoked')),
	CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
	FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, id) ON DELETE CASCADE
) STRICT;
CREATE INDEX sessions_by_user ON sessions (user_id, device_id);

-- Rotating refresh tokens, stored hashed. Each use marks the token used and issues the
-- next one of the same family; presenting a used token again revokes the whole family
-- and its session.
CREATE TABLE refresh_tokens (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
	family_id TEXT NOT NULL CHECK (length(family_id) = 32 AND family_id NOT GLOB '*[^0-9a-f]*'),
	token_hash TEXT NOT NULL UNIQUE
		CHECK (length(token_hash) = 64 AND token_hash NOT GLOB '*[^0-9a-f]*'),
	issued_at INTEGER NOT NULL CHECK (issued_at >= 0),
	expires_at INTEGER NOT NULL CHECK (expires_at > issued_at),
	used_at INTEGER CHECK (used_at >= 0),
	revoked_at INTEGER CHECK (revoked_at >= 0)
) STRICT;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

-- A service account is a users row of kind 'service' (so memberships, policies, devices
-- and sessions work unchanged) plus this row; its id is the user's id.
CREATE TABLE service_accounts (
	user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
	name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
	description TEXT CHECK (length(description) <= 1024),
	created_at INTEGER NOT NULL CHECK (created_at >= 0)
) STRICT;

-- Keys a service account signs in with (`sallyport login --service-key FILE`).
CREATE TABLE service_account_keys (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	service_account_id TEXT NOT NULL REFERENCES service_accounts (user_id) ON DELETE CASCADE,
	name TEXT CHECK (length(name) BETWEEN 1 AND 128),
	public_key_digest TEXT NOT NULL UNIQUE
		CHECK (length(public_key_digest) = 64 AND public_key_digest NOT GLOB '*[^0-9a-f]*'),
	public_key_pem TEXT NOT NULL CHECK (length(public_key_pem) BETWEEN 1 AND 16384),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	expires_at INTEGER NOT NULL CHECK (expires_at > created_at),
	last_used_at INTEGER CHECK (last_used_at >= 0),
	revoked_at INTEGER CHECK (revoked_at >= 0)
) STRICT;
CREATE INDEX service_account_keys_by_account ON service_account_keys (service_account_id);

-- Admin API keys, stored hashed; prefix is the key's first characters, shown in lists.
CREATE TABLE api_keys (
	id TEXT PRIMARY KEY CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
	name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
	role TEXT NOT NULL CHECK (role IN ('admin', 'auditor')),
	key_hash TEXT NOT NULL UNIQUE CHECK (length(key_hash) = 64 AND key_hash NOT GLOB '*[^0-9a-f]*'),
	prefix TEXT NOT NULL CHECK (length(prefix) BETWEEN 4 AND 32),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	expires_at INTEGER CHECK (expires_at > created_at),
	last_used_at INTEGER CHECK (last_used_at >= 0),
	revoked_at INTEGER CHECK (revoked_at >= 0)
) STRICT;

-- The controller's token signing keys. The private key PEM is protected at rest only by
-- the permissions of the database file and its directory (shared/migrate.h refuses loose
-- ones). A key is published in the JWKS from created_at until retire_after and signs
-- from not_before until not_after; not_before after created_at lets verifiers fetch a
-- new key before it is used.
CREATE TABLE signing_keys (
	kid TEXT PRIMARY KEY
		CHECK (length(kid) BETWEEN 1 AND 64 AND kid NOT GLOB '*[^A-Za-z0-9_-]*'),
	algorithm TEXT NOT NULL DEFAULT 'ES256' CHECK (algorithm IN ('ES256')),
	private_key_pem TEXT NOT NULL CHECK (length(private_key_pem) BETWEEN 1 AND 16384),
	created_at INTEGER NOT NULL CHECK (created_at >= 0),
	not_before INTEGER NOT NULL CHECK (not_before >= created_at),
	not_after INTEGER NOT NULL CHECK (not_after > not_before),
	retire_after INTEGER NOT NULL CHECK (retire_after >= not_after)
) STRICT;

-- Every admin change and sign-in decision. No foreign keys: the history outlives what
-- it names, so ids may point at deleted rows and actor_label keeps a readable name.
-- before_json / after_json never hold secrets (keys, token hashes).
CREATE TABLE audit_events (
	id INTEGER PRIMARY KEY,
	time INTEGER NOT NULL CHECK (time >= 0),
	actor_type TEXT NOT NULL
		CHECK (actor_type IN ('user', 'api_key', 'service_account', 'connector', 'system')),
	actor_id TEXT CHECK (length(actor_id) BETWEEN 1 AND 128),
	actor_label TEXT CHECK (length(actor_label) BETWEEN 1 AND 320),
	-- dotted lower-case verb, e.g. 'group.create', 'device.block'
	action TEXT NOT NULL
		CHECK (length(action) BETWEEN 1 AND 64 AND action NOT GLOB '*[^a-z0-9_.]*'),
	outcome TEXT NOT NULL DEFAULT 'success' CHECK (outcome IN ('success', 'denied', 'failed')),
	target_type TEXT
		CHECK (length(target_type) BETWEEN 1 AND 64 AND target_type NOT GLOB '*[^a-z0-9_]*'),
	target_id TEXT CHECK (length(target_id) BETWEEN 1 AND 128),
	before_json TEXT CHECK (before_json IS NULL
		OR (length(before_json) <= 65536 AND json_valid(before_json))),
	after_json TEXT CHECK (after_json IS NULL
		OR (length(after_json) <= 65536 AND json_valid(after_json))),
	request_id TEXT CHECK (length(request_id) BETWEEN 1 AND 128),
	source_address TEXT CHECK (length(source_address) BETWEEN 1 AND 64)
) STRICT;
CREATE INDEX audit_events_by_time ON audit_events (time);
CREATE INDEX audit_events_by_target ON audit_events (target_type, target_id);

-- One row per flow decision reported by a connector (or made by the controller when it
-- refuses a grant). No foreign keys, for the same reason as audit_events and because
-- this is the busiest insert. UNIQUE (connector_id, flow_id) makes a connector's resend
-- after a lost acknowledgement harmless (INSERT ... ON CONFLICT DO NOTHING).
CREATE TABLE flow_events (
	id INTEGER PRIMARY KEY,
	time INTEGER NOT NULL CHECK (time >= 0),
	flow_id TEXT NOT NULL CHECK (length(flow_id) BETWEEN 1 AND 64),
	connector_id TEXT CHECK (length(connector_id) BETWEEN 1 AND 64),
	user_id TEXT CHECK (length(user_id) BETWEEN 1 AND 64),
	device_id TEXT CHECK (length(device_id) BETWEEN 1 AND 64),
	session_id TEXT CHECK (length(session_id) BETWEEN 1 AND 64),
	resource_id TEXT CHECK (length(resource_id) BETWEEN 1 AND 64),
	protocol TEXT NOT NULL CHECK (protocol IN ('tcp', 'udp', 'icmp')),
	destination_host TEXT CHECK (length(destination_host) BETWEEN 1 AND 255),
	destination_ip TEXT CHECK (length(destination_ip) BETWEEN 2 AND 45),
	destination_port INTEGER CHECK (destination_port BETWEEN 0 AND 65535),
	decision TEXT NOT NULL CHECK (decision IN ('allow', 'deny')),
	-- a lower-case code such as 'no_policy' or 'port_not_allowed' (docs/protocol.md)
	reason TEXT CHECK (length(reason) BETWEEN 1 AND 64 AND reason NOT GLOB '*[^a-z0-9_]*'),
	bytes_up INTEGER NOT NULL DEFAULT 0 CHECK (bytes_up >= 0),
	bytes_down INTEGER NOT NULL DEFAULT 0 CHECK (bytes_down >= 0),
	duration_ms INTEGER NOT NULL DEFAULT 0 CHECK (duration_ms >= 0),
	CHECK (decision = 'allow' OR reason IS NOT NULL),
	UNIQUE (connector_id, flow_id)
) STRICT;
CREATE INDEX flow_events_by_time ON flow_events (time);
CREATE INDEX flow_events_by_user ON flow_events (user_id, time);

-- The change feed: clients and connectors ask for everything after the last seq they
-- saw. AUTOINCREMENT guarantees a seq is never reused, even after the newest rows are
-- deleted. entity_id is the changed row's key (memberships: 'USER_ID:GROUP_ID'); detail
-- is a JSON object with the parent ids a consumer needs after the row is gone.
CREATE TABLE changes (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	time INTEGER NOT NULL CHECK (time >= 0),
	kind TEXT NOT NULL CHECK (kind IN ('settings', 'user', 'group', 'membership',
		'remote_network', 'connector', 'resource', 'policy', 'device', 'session',
		'service_account_key', 'signing_key')),
	op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
	entity_id TEXT NOT NULL CHECK (length(entity_id) BETWEEN 1 AND 128),
	detail TEXT CHECK (detail IS NULL
		OR (length(detail) <= 4096 AND json_valid(detail) AND json_type(detail) = 'object'))
) STRICT;

-- The settings row is updated, never deleted or duplicated.
CREATE TRIGGER settings_kept BEFORE DELETE ON settings
BEGIN
	SELECT RAISE(ABORT, 'the settings row cannot be deleted');
END;

-- Triggers feeding the changes table. Updates are recorded only when a column that
-- matters to a consumer really changed (not last_seen_at, last_used_at, updated_at).

CREATE TRIGGER settings_changed AFTER UPDATE OF device_approval ON settings
WHEN old.device_approval IS NOT new.device_approval
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'settings', 'update', 'settings');
END;

CREATE TRIGGER users_inserted AFTER INSERT ON users
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'user', 'insert', new.id);
END;
CREATE TRIGGER users_updated AFTER UPDATE OF email, email_verified, display_name, role, disabled
ON users
WHEN old.email IS NOT new.email OR old.email_verified IS NOT new.email_verified
	OR old.display_name IS NOT new.display_name OR old.role IS NOT new.role
	OR old.disabled IS NOT new.disabled
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'user', 'update', new.id);
END;
CREATE TRIGGER users_deleted AFTER DELETE ON users
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'user', 'delete', old.id);
END;

CREATE TRIGGER groups_inserted AFTER INSERT ON groups
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'group', 'insert', new.id);
END;
CREATE TRIGGER groups_updated AFTER UPDATE OF name, source ON groups
WHEN old.name IS NOT new.name OR old.source IS NOT new.source
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'group', 'update', new.id);
END;
CREATE TRIGGER groups_deleted AFTER DELETE ON groups
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'group', 'delete', old.id);
END;

CREATE TRIGGER memberships_inserted AFTER INSERT ON memberships
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'membership', 'insert',
		new.user_id || ':' || new.group_id,
		json_object('user_id', new.user_id, 'group_id', new.group_id));
END;
CREATE TRIGGER memberships_updated AFTER UPDATE ON memberships
WHEN old.user_id IS NOT new.user_id OR old.group_id IS NOT new.group_id
	OR old.source IS NOT new.source
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'membership', 'update',
		new.user_id || ':' || new.group_id,
		json_object('user_id', new.user_id, 'group_id', new.group_id,
			'previous_user_id', old.user_id, 'previous_group_id', old.group_id));
END;
CREATE TRIGGER memberships_deleted AFTER DELETE ON memberships
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'membership', 'delete',
		old.user_id || ':' || old.group_id,
		json_object('user_id', old.user_id, 'group_id', old.group_id));
END;

CREATE TRIGGER remote_networks_inserted AFTER INSERT ON remote_networks
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'remote_network', 'insert', new.id);
END;
CREATE TRIGGER remote_networks_updated AFTER UPDATE OF name ON remote_networks
WHEN old.name IS NOT new.name
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'remote_network', 'update', new.id);
END;
CREATE TRIGGER remote_networks_deleted AFTER DELETE ON remote_networks
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'remote_network', 'delete', old.id);
END;

CREATE TRIGGER connectors_inserted AFTER INSERT ON connectors
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'connector', 'insert', new.id,
		json_object('network_id', new.network_id));
END;
CREATE TRIGGER connectors_updated
AFTER UPDATE OF network_id, name, public_key_digest, public_key_pem, state, direct_address
ON connectors
WHEN old.network_id IS NOT new.network_id OR old.name IS NOT new.name
	OR old.public_key_digest IS NOT new.public_key_digest
	OR old.public_key_pem IS NOT new.public_key_pem OR old.state IS NOT new.state
	OR old.direct_address IS NOT new.direct_address
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'connector', 'update', new.id,
		json_object('network_id', new.network_id, 'previous_network_id', old.network_id));
END;
CREATE TRIGGER connectors_deleted AFTER DELETE ON connectors
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'connector', 'delete', old.id,
		json_object('network_id', old.network_id));
END;

CREATE TRIGGER resources_inserted AFTER INSERT ON resources
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'resource', 'insert', new.id,
		json_object('network_id', new.network_id));
END;
CREATE TRIGGER resources_updated
AFTER UPDATE OF network_id, name, address, alias, tcp_ports, udp_ports, icmp ON resources
WHEN old.network_id IS NOT new.network_id OR old.name IS NOT new.name
	OR old.address IS NOT new.address OR old.alias IS NOT new.alias
	OR old.tcp_ports IS NOT new.tcp_ports OR old.udp_ports IS NOT new.udp_ports
	OR old.icmp IS NOT new.icmp
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'resource', 'update', new.id,
		json_object('network_id', new.network_id, 'previous_network_id', old.network_id));
END;
CREATE TRIGGER resources_deleted AFTER DELETE ON resources
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'resource', 'delete', old.id,
		json_object('network_id', old.network_id));
END;

CREATE TRIGGER policies_inserted AFTER INSERT ON policies
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'policy', 'insert', new.id,
		json_object('group_id', new.group_id, 'resource_id', new.resource_id));
END;
CREATE TRIGGER policies_updated
AFTER UPDATE OF group_id, resource_id, require_mfa, max_session_age_s ON policies
WHEN old.group_id IS NOT new.group_id OR old.resource_id IS NOT new.resource_id
	OR old.require_mfa IS NOT new.require_mfa
	OR old.max_session_age_s IS NOT new.max_session_age_s
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'policy', 'update', new.id,
		json_object('group_id', new.group_id, 'resource_id', new.resource_id,
			'previous_group_id', old.group_id, 'previous_resource_id', old.resource_id));
END;
CREATE TRIGGER policies_deleted AFTER DELETE ON policies
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'policy', 'delete', old.id,
		json_object('group_id', old.group_id, 'resource_id', old.resource_id));
END;

CREATE TRIGGER devices_inserted AFTER INSERT ON devices
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'device', 'insert', new.id,
		json_object('user_id', new.user_id));
END;
CREATE TRIGGER devices_updated
AFTER UPDATE OF user_id, public_key_thumbprint, name, state ON devices
WHEN old.user_id IS NOT new.user_id OR old.public_key_thumbprint IS NOT new.public_key_thumbprint
	OR old.name IS NOT new.name OR old.state IS NOT new.state
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'device', 'update', new.id,
		json_object('user_id', new.user_id));
END;
CREATE TRIGGER devices_deleted AFTER DELETE ON devices
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'device', 'delete', old.id,
		json_object('user_id', old.user_id));
END;

CREATE TRIGGER sessions_inserted AFTER INSERT ON sessions
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'session', 'insert', new.id,
		json_object('user_id', new.user_id, 'device_id', new.device_id));
END;
CREATE TRIGGER sessions_updated AFTER UPDATE OF revoked_at, expires_at ON sessions
WHEN old.revoked_at IS NOT new.revoked_at OR old.expires_at IS NOT new.expires_at
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'session', 'update', new.id,
		json_object('user_id', new.user_id, 'device_id', new.device_id));
END;
CREATE TRIGGER sessions_deleted AFTER DELETE ON sessions
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'session', 'delete', old.id,
		json_object('user_id', old.user_id, 'device_id', old.device_id));
END;

CREATE TRIGGER service_account_keys_inserted AFTER INSERT ON service_account_keys
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'service_account_key', 'insert', new.id,
		json_object('service_account_id', new.service_account_id));
END;
CREATE TRIGGER service_account_keys_updated
AFTER UPDATE OF revoked_at, expires_at ON service_account_keys
WHEN old.revoked_at IS NOT new.revoked_at OR old.expires_at IS NOT new.expires_at
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'service_account_key', 'update', new.id,
		json_object('service_account_id', new.service_account_id));
END;
CREATE TRIGGER service_account_keys_deleted AFTER DELETE ON service_account_keys
BEGIN
	INSERT INTO changes (time, kind, op, entity_id, detail)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'service_account_key', 'delete', old.id,
		json_object('service_account_id', old.service_account_id));
END;

CREATE TRIGGER signing_keys_inserted AFTER INSERT ON signing_keys
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'signing_key', 'insert', new.kid);
END;
CREATE TRIGGER signing_keys_updated
AFTER UPDATE OF not_before, not_after, retire_after ON signing_keys
WHEN old.not_before IS NOT new.not_before OR old.not_after IS NOT new.not_after
	OR old.retire_after IS NOT new.retire_after
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'signing_key', 'update', new.kid);
END;
CREATE TRIGGER signing_keys_deleted AFTER DELETE ON signing_keys
BEGIN
	INSERT INTO changes (time, kind, op, entity_id)
	VALUES (CAST(strftime('%s', 'now') AS INTEGER), 'signing_key', 'delete', old.kid);
END;

-- The settings row exists from the start, so the controller only ever updates it.
INSERT INTO settings (id, instance_id, device_approval, created_at, updated_at)
VALUES (1, lower(hex(randomblob(16))), 'auto', CAST(strftime('%s', 'now') AS INTEGER),
	CAST(strftime('%s', 'now') AS INTEGER));
