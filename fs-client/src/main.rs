//! `shelf` command line: parse arguments and hand over to [`cli`]. Errors are printed plainly.

mod cli;

fn main() {
    // `shelf status | head` ends quietly, as other command-line tools do. What keeps
    // running (the mount, which `up` starts too, and the backup daemon) keeps SIGPIPE
    // ignored: a closed connection must be an error it handles, not its end.
    let long_running = matches!(
        std::env::args().nth(1).as_deref(),
        Some("mount" | "up" | "backup")
    );
    if !long_running {
        // SAFETY: called before any thread starts; restores the default disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Err(e) = cli::main() {
        eprintln!("shelf: {e:#}");
        std::process::exit(1);
    }
}
