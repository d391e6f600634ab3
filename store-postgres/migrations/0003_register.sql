-- 3: the allocation register (units, VMs in their order). Keys that queries order by sort
-- by code point (COLLATE "C"), as SQLite does, whatever the database's locale.
CREATE TABLE register_units (
    name TEXT COLLATE "C" PRIMARY KEY,
    quota TEXT,
    sanction TEXT
);
CREATE TABLE register_vms (
    unit TEXT COLLATE "C" NOT NULL,
    pos BIGINT NOT NULL,
    zone TEXT NOT NULL,
    developer TEXT NOT NULL,
    system TEXT NOT NULL,
    subsystem TEXT NOT NULL,
    server_type TEXT NOT NULL,
    owner TEXT NOT NULL,
    email TEXT NOT NULL,
    phone TEXT NOT NULL,
    vcpus BIGINT NOT NULL,
    mem_gb BIGINT NOT NULL,
    sys_disk_gb BIGINT NOT NULL,
    data_disk_gb BIGINT NOT NULL,
    os TEXT NOT NULL,
    clustered BOOLEAN NOT NULL,
    cluster_group TEXT NOT NULL,
    note TEXT NOT NULL,
    uuid TEXT,
    PRIMARY KEY (unit, pos)
);
