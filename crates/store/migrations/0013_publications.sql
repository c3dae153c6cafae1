-- Published config snapshots: every version of each scope's compiled SDK configuration.
-- `organization` is '' for an environment's global scope. `doc` is the version's record
-- (JSON), `body` the snapshot itself.
CREATE TABLE publications (
    environment   TEXT NOT NULL,
    organization  TEXT NOT NULL,
    version       INTEGER NOT NULL,
    hash          TEXT NOT NULL,
    doc           TEXT NOT NULL,
    body          TEXT NOT NULL,
    PRIMARY KEY (environment, organization, version)
) WITHOUT ROWID;

-- Scopes whose last publish failed (a target could not be written): the publish job
-- retries them. `failed_at` is the last failure, in milliseconds since the epoch.
CREATE TABLE publish_pending (
    environment   TEXT NOT NULL,
    organization  TEXT NOT NULL,
    error         TEXT NOT NULL,
    failed_at     INTEGER NOT NULL,
    PRIMARY KEY (environment, organization)
) WITHOUT ROWID;
