-- The SIP presence server's tables, for PostgreSQL 10 or later.
--
-- Table and column names follow OpenSIPS (stable since 2.4) so that OpenSIPS
-- tools and OpenXCAP can share them. Columns that OpenSIPS does not have are
-- marked "ours"; each is nullable or has a default, so that a row written by
-- another tool is still valid. Times are Unix seconds.
--
-- Differences from OpenSIPS:
--   * active_watchers is unique on (callid, to_tag, from_tag, event,
--     event_id), the key of a subscription in RFC 6665, instead of OpenSIPS's
--     (presentity_uri, callid, to_tag, from_tag); event_id is '' rather than
--     NULL when the Event header has no id.
--   * location is unique on (username, domain, contact), the key of a binding
--     in RFC 3261 section 10; q is NULL when the contact gave none.
--   * some widths are larger (tags, Call-IDs, URIs).
--
-- The file is idempotent: running it again creates only what is missing,
-- which is how an older schema is upgraded (the server then raises the
-- version row). The version row names the schema as a whole
-- ('presence_schema'); the server refuses to run on a version it does not
-- know.

-- Two servers starting at once on an empty database must not both create
-- the tables: the lock (an arbitrary number) is held until the end of the
-- transaction the server runs this file in.
SELECT pg_advisory_xact_lock(5060173);

CREATE TABLE IF NOT EXISTS version (
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_t_name_idx UNIQUE (table_name)
);

CREATE TABLE IF NOT EXISTS presentity (
    id SERIAL PRIMARY KEY NOT NULL,
    username VARCHAR(64) NOT NULL,
    domain VARCHAR(64) NOT NULL,
    event VARCHAR(64) NOT NULL,
    etag VARCHAR(128) NOT NULL,
    expires INTEGER NOT NULL,
    received_time INTEGER NOT NULL,
    body BYTEA,
    extra_hdrs BYTEA,
    sender VARCHAR(255),
    content_type VARCHAR(128) DEFAULT '' NOT NULL, -- ours
    CONSTRAINT presentity_presentity_idx UNIQUE (username, domain, event, etag)
);

CREATE INDEX IF NOT EXISTS presentity_presentity_expires ON presentity (expires);

CREATE TABLE IF NOT EXISTS active_watchers (
    id SERIAL PRIMARY KEY NOT NULL,
    presentity_uri VARCHAR(255) NOT NULL,
    watcher_username VARCHAR(64) NOT NULL,
    watcher_domain VARCHAR(64) NOT NULL,
    to_user VARCHAR(64) NOT NULL,
    to_domain VARCHAR(64) NOT NULL,
    event VARCHAR(64) DEFAULT 'presence' NOT NULL,
    event_id VARCHAR(64) DEFAULT '' NOT NULL,
    to_tag VARCHAR(128) NOT NULL,
    from_tag VARCHAR(128) NOT NULL,
    callid VARCHAR(255) NOT NULL,
    local_cseq INTEGER NOT NULL,
    remote_cseq INTEGER NOT NULL,
    contact VARCHAR(255) NOT NULL,
    record_route TEXT,
    expires INTEGER NOT NULL,
    status INTEGER DEFAULT 2 NOT NULL,
    reason VARCHAR(64),
    version INTEGER DEFAULT 0 NOT NULL,
    socket_info VARCHAR(64) NOT NULL,
    local_contact VARCHAR(255) NOT NULL,
    sharing_tag VARCHAR(32) DEFAULT NULL,
    watcher_uri VARCHAR(255) DEFAULT '' NOT NULL, -- ours
    watcher_display_name VARCHAR(128), -- ours
    from_header TEXT DEFAULT '' NOT NULL, -- ours
    to_header TEXT DEFAULT '' NOT NULL, -- ours
    created_time INTEGER DEFAULT 0 NOT NULL, -- ours
    CONSTRAINT active_watchers_active_watchers_idx
        UNIQUE (callid, to_tag, from_tag, event, event_id)
);

CREATE INDEX IF NOT EXISTS active_watchers_active_watchers_expires
    ON active_watchers (expires);
CREATE INDEX IF NOT EXISTS active_watchers_active_watchers_pres
    ON active_watchers (presentity_uri, event);

CREATE TABLE IF NOT EXISTS watchers (
    id SERIAL PRIMARY KEY NOT NULL,
    presentity_uri VARCHAR(255) NOT NULL,
    watcher_username VARCHAR(64) NOT NULL,
    watcher_domain VARCHAR(64) NOT NULL,
    event VARCHAR(64) DEFAULT 'presence' NOT NULL,
    status INTEGER NOT NULL,
    reason VARCHAR(64),
    inserted_time INTEGER NOT NULL,
    CONSTRAINT watchers_watcher_idx
        UNIQUE (presentity_uri, watcher_username, watcher_domain, event)
);

CREATE TABLE IF NOT EXISTS xcap (
    id SERIAL PRIMARY KEY NOT NULL,
    username VARCHAR(64) NOT NULL,
    domain VARCHAR(64) NOT NULL,
    doc BYTEA NOT NULL,
    doc_type INTEGER NOT NULL,
    etag VARCHAR(128) NOT NULL,
    source INTEGER NOT NULL,
    doc_uri VARCHAR(255) NOT NULL,
    port INTEGER NOT NULL,
    CONSTRAINT xcap_account_doc_type_idx UNIQUE (username, domain, doc_type, doc_uri)
);

CREATE INDEX IF NOT EXISTS xcap_source_idx ON xcap (source);

CREATE TABLE IF NOT EXISTS location (
    id SERIAL PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    contact VARCHAR(255) NOT NULL,
    received VARCHAR(128),
    path VARCHAR(255),
    expires INTEGER NOT NULL,
    q DOUBLE PRECISION,
    callid VARCHAR(255) NOT NULL,
    cseq INTEGER NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(64),
    methods INTEGER,
    method_names VARCHAR(255) DEFAULT '' NOT NULL, -- ours
    contact_params TEXT DEFAULT '' NOT NULL, -- ours
    CONSTRAINT location_account_contact_idx UNIQUE (username, domain, contact)
);

CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires);

-- The credentials of digest authentication, as OpenSIPS's auth_db reads them
-- (subscriber version 8): ha1 is MD5(username:realm:password), ha1_sha256
-- and ha1_sha512t256 the same with SHA-256 and SHA-512/256; password, the
-- clear text, is read only when the hash an algorithm needs is empty.
-- Added in schema version 2.
CREATE TABLE IF NOT EXISTS subscriber (
    id SERIAL PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    password VARCHAR(25) DEFAULT '' NOT NULL,
    ha1 VARCHAR(64) DEFAULT '' NOT NULL,
    ha1_sha256 VARCHAR(64) DEFAULT '' NOT NULL,
    ha1_sha512t256 VARCHAR(64) DEFAULT '' NOT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain)
);

CREATE INDEX IF NOT EXISTS subscriber_username_idx ON subscriber (username);

INSERT INTO version (table_name, table_version) VALUES ('presence_schema', 2)
    ON CONFLICT (table_name) DO NOTHING;
