//! Output into a closed pipe (`coffer ls | head`, `coffer-admin ... | head`)
//! ends the program quietly, the way Unix tools end: by SIGPIPE.
//!
//! Rust ignores SIGPIPE so that a write to a closed socket is an error, not
//! a death; a node or a client mid-upload needs exactly that, so the signal
//! stays ignored. Only a failed write to *stdout* because its reader left
//! ends the process, from two places: `println!`'s panic (caught by the hook
//! [`end_quietly_on_closed_pipe`] installs) and an error returned up to
//! `main` ([`is_closed_pipe`]).

use std::error::Error;
use std::io::ErrorKind;

/// Installs a panic hook that turns "failed printing to stdout: Broken
/// pipe" into a quiet death by SIGPIPE; every other panic is reported as
/// before.
pub fn end_quietly_on_closed_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            die_of_sigpipe();
        }
        previous(info);
    }));
}

/// Whether `error`, or an error it was caused by, is a write into a pipe
/// whose reader left.
pub fn is_closed_pipe(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == ErrorKind::BrokenPipe) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Ends the process as a Unix tool whose reader left: killed by SIGPIPE.
pub fn die_of_sigpipe() -> ! {
    // SAFETY: restoring a signal's default action and raising it touches no
    // Rust state; the process ends here.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(141)
}
