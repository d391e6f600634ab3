-- 35: the latest reclaim finding per VM, for the re-check after a restart
CREATE TABLE reclaim_detections (
    uuid TEXT COLLATE "C" PRIMARY KEY,
    fed_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
