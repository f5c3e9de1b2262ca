//! `hermes-reaper`: the container's PID 1. See `hermes-reaper --help`.

use std::process::ExitCode;

use hermes_init::reaper::config::{self, Invocation};

fn main() -> ExitCode {
    let invocation = config::parse(std::env::args_os().skip(1), |name| std::env::var(name).ok());
    let code = match invocation {
        Ok(Invocation::Help) => {
            print!("{}", config::HELP);
            0
        }
        Ok(Invocation::Version) => {
            println!("hermes-reaper {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Invocation::Run(config)) => {
            let format = match config.output_format {
                hermes_init::reaper::output::Format::Json => hermes_init::logging::LogFormat::Json,
                _ => hermes_init::logging::LogFormat::Text,
            };
            hermes_init::reaper::sink::install();
            hermes_init::logging::init_with(config.log_level, format, hermes_init::reaper::sink::StderrLine::default);
            hermes_init::reaper::run(*config)
        }
        Err(e) => {
            eprintln!("{} error: {e}", hermes_init::logging::PREFIX);
            hermes_init::core::exit::code::USAGE
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
