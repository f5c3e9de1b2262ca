//! `hermesctl`: the operator's command line. See `hermesctl --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    hermes_init::sys::signals::restore_default_sigpipe();
    let args = match hermes_init::utf8_args("hermesctl") {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(100);
        }
    };
    let code = hermes_init::ctl::run(args, |name| std::env::var(name).ok());
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
