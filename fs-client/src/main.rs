//! `shelf` command line: parse arguments and hand over to [`cli`]. Errors are printed plainly.

mod cli;

fn main() {
    if let Err(e) = cli::main() {
        eprintln!("shelf: {e:#}");
        std::process::exit(1);
    }
}
