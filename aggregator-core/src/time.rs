//! Dates and times for the core: the workspace's one [`Day`] type, the civil-date conversions
//! and Beijing time come from `yunjian-time` (shared with the simulator, which must not depend
//! on the aggregator) and are re-exported here, so the core writes `crate::time::Day`, as are
//! durations as config files write them (`90s`, `15m`, `3d`: `crate::time::duration`).

pub use yunjian_time::*;
