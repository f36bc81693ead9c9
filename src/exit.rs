//! Process exit codes (from BSD `sysexits.h` where one fits).

/// Success.
pub const OK: i32 = 0;
/// Anything else went wrong.
pub const FAILURE: i32 = 1;
/// A one-shot command could not reach Redis (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: i32 = 69;
/// Bad configuration (`EX_CONFIG`): nothing was started.
pub const CONFIG: i32 = 78;
