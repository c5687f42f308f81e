-- Sallyport schema version 2: "access ended" revocations (docs/protocol.md §1.6).
--
-- When a change takes a resource away from a user (a policy deleted or moved to another
-- group or resource, a membership deleted, a group deleted, by an admin or by the IdP
-- groups claim at sign-in), the triggers below record the (user, resource) pairs that
-- lost access, with the time. Connectors refuse grants for such a pair issued at or before
-- revoked_at and cut the live flows they carry. A pair that is reachable again later
-- needs no cleanup: grants issued after revoked_at are not affected. Rows matter only
-- while a grant issued before them can still be valid: expires_at = revoked_at + 3660
-- (the longest grant_ttl, 60 min, plus 60 s clock skew); older rows are deleted when a
-- new one is written. No foreign keys: a deleted user or resource leaves nothing to cut,
-- and the connector config joins on resources.

CREATE TABLE access_revocations (
	user_id TEXT NOT NULL CHECK (length(user_id) BETWEEN 1 AND 64),
	resource_id TEXT NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 64),
	revoked_at INTEGER NOT NULL CHECK (revoked_at >= 0),
	expires_at INTEGER NOT NULL CHECK (expires_at >= revoked_at),
	PRIMARY KEY (user_id, resource_id)
) STRICT;
CREATE INDEX access_revocations_by_resource ON access_revocations (resource_id, expires_at);

-- A membership ended: the user loses every resource of that group's policies that no
-- other group of theirs has a policy for (the membership row is already gone here).
CREATE TRIGGER access_revocations_membership AFTER DELETE ON memberships
BEGIN
	DELETE FROM access_revocations WHERE expires_at < CAST(strftime('%s', 'now') AS INTEGER);
	INSERT INTO access_revocations (user_id, resource_id, revoked_at, expires_at)
	SELECT old.user_id, p.resource_id, CAST(strftime('%s', 'now') AS INTEGER),
		CAST(strftime('%s', 'now') AS INTEGER) + 3660
	FROM policies p
	WHERE p.group_id = old.group_id
		AND NOT EXISTS (SELECT 1 FROM policies p2 JOIN memberships m2
			ON m2.group_id = p2.group_id
			WHERE m2.user_id = old.user_id AND p2.resource_id = p.resource_id)
	ON CONFLICT (user_id, resource_id) DO UPDATE SET revoked_at = excluded.revoked_at,
		expires_at = excluded.expires_at;
END;

-- A policy deleted: each member of its group loses the resource unless another of their
-- groups has a policy for it (the policy row is already gone here).
CREATE TRIGGER access_revocations_policy_deleted AFTER DELETE ON policies
BEGIN
	DELETE FROM access_revocations WHERE expires_at < CAST(strftime('%s', 'now') AS INTEGER);
	INSERT INTO access_revocations (user_id, resource_id, revoked_at, expires_at)
	SELECT m.user_id, old.resource_id, CAST(strftime('%s', 'now') AS INTEGER),
		CAST(strftime('%s', 'now') AS INTEGER) + 3660
	FROM memberships m
	WHERE m.group_id = old.group_id
		AND NOT EXISTS (SELECT 1 FROM policies p2 JOIN memberships m2
			ON m2.group_id = p2.group_id
			WHERE m2.user_id = m.user_id AND p2.resource_id = old.resource_id)
	ON CONFLICT (user_id, resource_id) DO UPDATE SET revoked_at = excluded.revoked_at,
		expires_at = excluded.expires_at;
END;

-- A policy moved to another group or resource: the old pairing ends like a delete.
CREATE TRIGGER access_revocations_policy_moved
AFTER UPDATE OF group_id, resource_id ON policies
WHEN old.group_id IS NOT new.group_id OR old.resource_id IS NOT new.resource_id
BEGIN
	DELETE FROM access_revocations WHERE expires_at < CAST(strftime('%s', 'now') AS INTEGER);
	INSERT INTO access_revocations (user_id, resource_id, revoked_at, expires_at)
	SELECT m.user_id, old.resource_id, CAST(strftime('%s', 'now') AS INTEGER),
		CAST(strftime('%s', 'now') AS INTEGER) + 3660
	FROM memberships m
	WHERE m.group_id = old.group_id
		AND NOT EXISTS (SELECT 1 FROM policies p2 JOIN memberships m2
			ON m2.group_id = p2.group_id
			WHERE m2.user_id = m.user_id AND p2.resource_id = old.resource_id)
	ON CONFLICT (user_id, resource_id) DO UPDATE SET revoked_at = excluded.revoked_at,
		expires_at = excluded.expires_at;
END;
