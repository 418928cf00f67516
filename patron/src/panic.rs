//! Reading a caught panic: the handler, consumer and component runners all
//! log what a panic said without re-raising it.

/// The message a panic was raised with, or a stand-in when its payload is
/// not a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
