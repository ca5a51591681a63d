-- One row per media item (local uploads, async-upload reservations, later cached remote media).
CREATE TABLE media (
    server_name     TEXT    NOT NULL,
    media_id        TEXT    NOT NULL,
    uploader        TEXT,
    content_type    TEXT,
    filename        TEXT,
    size_bytes      INTEGER,
    -- SHA-256 (hex) of the content; NULL while an async upload is pending.
    sha256          TEXT,
    created_ts      INTEGER  NOT NULL,
    uploaded_ts     INTEGER,
    -- Deadline for uploading content to a pending media id.
    expires_ts      INTEGER,
    last_access_ts  INTEGER  NOT NULL,
    -- Only reachable through the authenticated endpoints (legacy freeze).
    authenticated   BOOLEAN NOT NULL,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_sha256_idx ON media (sha256);
CREATE INDEX media_pending_idx ON media (uploader, expires_ts) WHERE sha256 IS NULL;
