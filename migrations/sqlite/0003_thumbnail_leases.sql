-- Who is making thumbnails of a media item right now, so that several mxcd processes
-- sharing this database do the work once. `work` names it ("set" for the configured
-- sizes, or one size). A lease past `expires_ts` (its holder died) may be taken over.
CREATE TABLE thumbnail_leases (
    server_name  TEXT    NOT NULL,
    media_id     TEXT    NOT NULL,
    work         TEXT    NOT NULL,
    holder       TEXT    NOT NULL,
    expires_ts   BIGINT  NOT NULL,
    PRIMARY KEY (server_name, media_id, work)
);
