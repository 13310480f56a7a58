//! `firehose`: parse the command line, call the library, map errors to exit codes.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use firehose::cli::{Cli, Command, ServeArgs};
use firehose::Bridge;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Events are allocated by publishers and freed by the retention thread: mimalloc takes
/// such frees without a lock (glibc's arena lock made publishers wait; see the README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Bench(args) => firehose::bench::run(&args).map_err(|e| e.to_string()),
        Command::Stress(args) => match firehose::stress::run(&args) {
            Ok(outcome) if args.check && !outcome.failed_checks.is_empty() => {
                for why in &outcome.failed_checks {
                    eprintln!("firehose: check failed: {why}");
                }
                return ExitCode::from(1);
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("firehose: {e}");
            ExitCode::from(2)
        }
    }
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    let config = args.config().map_err(|e| e.to_string())?;
    // Before the warning below, so a bad flag is the only thing said.
    config.validate().map_err(|e| e.to_string())?;
    let (soft, hard) = firehose::raise_fd_limit();
    if (soft as usize) < config.max_connections {
        eprintln!(
            "firehose: warning: the open-files limit is {soft} (hard {hard}), below --max-connections {}; raise `ulimit -n`",
            config.max_connections
        );
    }
    let bridge = Bridge::builder()
        .config(config)
        .start()
        .map_err(|e| e.to_string())?;
    let addr = bridge.local_addr();
    if let Some(path) = &args.addr_file {
        std::fs::write(path, addr.to_string())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    eprintln!(
        "firehose: listening on {addr} with {} I/O threads — ws://{addr}/ws/events, POST http://{addr}/publish, GET http://{addr}/health",
        bridge.engine().config.io_threads
    );
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot handle signals: {e}"))?;
    if let Some(signal) = signals.forever().next() {
        let drain = bridge.engine().config.drain_timeout;
        if drain.is_zero() {
            eprintln!("firehose: signal {signal}: closing connections (1001) and stopping");
        } else {
            eprintln!(
                "firehose: signal {signal}: delivering what is queued for up to {drain:?} (a second signal skips this), then closing connections (1001) and stopping"
            );
        }
    }
    // A second Ctrl-C (or SIGTERM) during the drain closes every connection at once.
    let engine = Arc::clone(bridge.engine());
    let handle = signals.handle();
    let second = std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("firehose: signal {signal} during the drain: closing connections now");
            engine.cut_drain_short();
        }
    });
    bridge.shutdown();
    handle.close();
    let _ = second.join();
    Ok(())
}
