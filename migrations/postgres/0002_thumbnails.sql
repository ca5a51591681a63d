-- Size of the (oriented) image, once probed; NULL for non-images or not yet probed.
ALTER TABLE media ADD COLUMN image_width BIGINT;
ALTER TABLE media ADD COLUMN image_height BIGINT;

-- Thumbnails, keyed by what was asked for. The blob may be the original content itself,
-- where that already fits the request (or a thumbnail would not be smaller).
CREATE TABLE thumbnails (
    server_name   TEXT    NOT NULL,
    media_id      TEXT    NOT NULL,
    req_width     BIGINT  NOT NULL,
    req_height    BIGINT  NOT NULL,
    method        TEXT    NOT NULL,
    animated      BOOLEAN NOT NULL,
    width         BIGINT  NOT NULL,
    height        BIGINT  NOT NULL,
    content_type  TEXT    NOT NULL,
    size_bytes    BIGINT  NOT NULL,
    sha256        TEXT    NOT NULL,
    created_ts    BIGINT  NOT NULL,
    PRIMARY KEY (server_name, media_id, req_width, req_height, method, animated)
);
CREATE INDEX thumbnails_sha256_idx ON thumbnails (sha256);
