//! `hermes-cont-init exec-as USER -- CMD [ARGS...]`: the privilege-dropping helper of the
//! gateway slots' `run` files (and of any hook or command that wants it). It replaces itself with CMD, run as
//! USER when running as root and USER exists, as is otherwise.

use crate::core::exit::code;

/// Runs the helper with the arguments after `exec-as`; returns only on failure, with the
/// exit code a shell would give.
pub fn main(args: &[String]) -> i32 {
    let (user, command) = match args {
        [user, dashdash, command @ ..] if dashdash == "--" && !command.is_empty() => (user, command),
        _ => {
            eprintln!("hermes-cont-init: usage: hermes-cont-init exec-as USER -- CMD [ARGS...]");
            return code::USAGE;
        }
    };
    let error = crate::sys::user::exec_as(user, command);
    eprintln!("hermes-cont-init: cannot run {}: {error}", command[0]);
    if error.kind() == std::io::ErrorKind::NotFound { code::NOT_FOUND } else { code::CANNOT_EXECUTE }
}
