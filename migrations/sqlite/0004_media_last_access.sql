-- Finding the least recently used cached remote media for eviction.
CREATE INDEX media_last_access_idx ON media (last_access_ts);
