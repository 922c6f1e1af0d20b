//! Capability `log`: lines in Corral's log, tagged with the plugin's id.
//!
//! ```no_run
//! use corral_plugin::log;
//! log::info!("added {} passages", 3);
//! log::warn("no embedding model");
//! ```

/// How important a log line is.
pub type Level = crate::__private::wit::corral::plugin::log::Level;

/// Writes `message` at `level`.
pub fn write(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::__private::wit::corral::plugin::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::host_log(level, message);
}

/// Writes `message` at level debug.
pub fn debug(message: &str) {
    write(Level::Debug, message);
}

/// Writes `message` at level info.
pub fn info(message: &str) {
    write(Level::Info, message);
}

/// Writes `message` at level warn.
pub fn warn(message: &str) {
    write(Level::Warn, message);
}

/// Writes `message` at level error.
pub fn error(message: &str) {
    write(Level::Error, message);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug {
    ($($arg:tt)+) => { $crate::log::debug(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_info {
    ($($arg:tt)+) => { $crate::log::info(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn {
    ($($arg:tt)+) => { $crate::log::warn(&::std::format!($($arg)+)) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_error {
    ($($arg:tt)+) => { $crate::log::error(&::std::format!($($arg)+)) };
}

/// `log::debug!("...", args)`: formats like `format!` and writes at debug.
pub use crate::__log_debug as debug;
/// `log::error!("...", args)`: formats like `format!` and writes at error.
pub use crate::__log_error as error;
/// `log::info!("...", args)`: formats like `format!` and writes at info.
pub use crate::__log_info as info;
/// `log::warn!("...", args)`: formats like `format!` and writes at warn.
pub use crate::__log_warn as warn;
