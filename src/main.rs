//! The `backfill` command. All logic lives in the library; this only parses the
//! command line and turns the result into an exit code.

use clap::Parser;

fn main() {
    let cli = match backfill::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version are not usage errors.
            let code = if e.use_stderr() {
                backfill::cli::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(backfill::cli::main_with(cli));
}
