//! `hermes-cont-init`: the boot reconciler of gateway slots. See `hermes-cont-init --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    hermes_init::sys::signals::restore_default_sigpipe();
    let args = match hermes_init::utf8_args("hermes-cont-init") {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(100);
        }
    };
    let code = hermes_init::cont_init::main(args, |name| std::env::var(name).ok());
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
