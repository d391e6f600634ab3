-- 4: the mandated antivirus per node: the latest report's frame and what was seen before
ALTER TABLE nodes ADD COLUMN antivirus BYTEA;
ALTER TABLE nodes ADD COLUMN antivirus_history TEXT;
