//! `hermesctl`: the operator's command line. See `hermesctl --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    hermes_init::sys::signals::restore_default_sigpipe();
    let args: Vec<String> = match std::env::args_os().skip(1).map(|a| a.into_string()).collect() {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("hermesctl: argument is not UTF-8: {bad:?}");
            return ExitCode::from(100);
        }
    };
    let code = hermes_init::ctl::run(args, |name| std::env::var(name).ok());
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
