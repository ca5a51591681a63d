-- Size of the (oriented) image, once probed; NULL for non-images or not yet probed.
ALTER TABLE media ADD COLUMN image_width INTEGER;
ALTER TABLE media ADD COLUMN image_height INTEGER;

-- Thumbnails, keyed by what was asked for. The blob may be the original content itself,
-- where that already fits the request (or a thumbnail would not be smaller).
CREATE TABLE thumbnails (
    server_name   TEXT    NOT NULL,
    media_id      TEXT    NOT NULL,
    req_width     INTEGER  NOT NULL,
    req_height    INTEGER  NOT NULL,
    method        TEXT    NOT NULL,
    animated      BOOLEAN NOT NULL,
    width         INTEGER  NOT NULL,
    height        INTEGER  NOT NULL,
    content_type  TEXT    NOT NULL,
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT    NOT NULL,
    created_ts    INTEGER  NOT NULL,
    PRIMARY KEY (server_name, media_id, req_width, req_height, method, animated)
);
CREATE INDEX thumbnails_sha256_idx ON thumbnails (sha256);
