//! `firehose bench`: the end-to-end load generator (see [`run`]).

use clap::Args;

/// `firehose bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {}

/// Why a bench run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {}

/// Runs the bench.
pub fn run(_args: &BenchArgs) -> Result<(), BenchError> {
    Ok(())
}

/// Raises the open-files soft limit to the hard limit; returns (soft, hard) after.
pub fn raise_fd_limit() -> (u64, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the rlimit struct we pass by pointer,
    // which lives on this stack frame for the duration of each call.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return (0, 0);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    (lim.rlim_cur, lim.rlim_max)
}
