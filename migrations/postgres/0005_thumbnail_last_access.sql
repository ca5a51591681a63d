-- Thumbnails of remote media fetched from their origin (the original not cached)
-- count toward the remote cache budget and are evicted by last access too.
ALTER TABLE thumbnails ADD COLUMN last_access_ts BIGINT NOT NULL DEFAULT 0;
UPDATE thumbnails SET last_access_ts = created_ts;
