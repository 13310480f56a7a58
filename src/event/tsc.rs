//! The CPU's time-stamp counter, where it can stand in for the monotonic clock.
//!
//! Reading `Instant::now` was about 18 ns of an in-process publish (README, *Publish*):
//! `clock_gettime` through the vDSO reads this same counter and then scales it under a
//! sequence lock. [`crate::event::timestamp`] reads the counter itself between its
//! once-a-millisecond readings of the real clocks, and scales it with a rate measured
//! against them.
//!
//! Only where that is sound: on x86_64 Linux, when the kernel itself keeps time with the
//! counter (`current_clocksource` is `tsc`, which the kernel selects only for an
//! invariant counter synchronised across CPUs), and when this process may execute
//! `rdtsc` (`prctl(PR_GET_TSC)`: a sandbox can make it fault). Anywhere else
//! [`usable`] is false and nothing here is called.

use std::sync::OnceLock;

/// Where the kernel names its clocksource.
const CLOCKSOURCE: &str = "/sys/devices/system/clocksource/clocksource0/current_clocksource";

/// Whether [`read`] may be called and stands in for the monotonic clock. Decided once
/// per process.
pub fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let kernel_uses_it =
            std::fs::read_to_string(CLOCKSOURCE).is_ok_and(|name| is_tsc_clocksource(&name));
        kernel_uses_it && may_execute()
    })
}

/// `current_clocksource`'s content names the TSC.
fn is_tsc_clocksource(name: &str) -> bool {
    name.trim() == "tsc"
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[allow(unsafe_code)]
fn may_execute() -> bool {
    let mut state: libc::c_int = 0;
    // SAFETY: PR_GET_TSC writes one c_int through its second argument, which points to
    // `state`, a live, writable c_int; the remaining arguments are unused.
    let ok = unsafe { libc::prctl(libc::PR_GET_TSC, &mut state as *mut libc::c_int, 0, 0, 0) };
    ok == 0 && state == libc::PR_TSC_ENABLE
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn may_execute() -> bool {
    false
}

/// The counter. Call only when [`usable`] said so.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[allow(unsafe_code)]
#[inline]
pub fn read() -> u64 {
    // SAFETY: `rdtsc` reads a register and touches no memory. Every x86_64 CPU has it;
    // the one way it can fault, the OS disabling it for this process, is ruled out by
    // `usable`, which callers check first.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Never called: [`usable`] is false here.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub fn read() -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_tsc_clocksource_counts() {
        assert!(is_tsc_clocksource("tsc\n"));
        assert!(!is_tsc_clocksource("kvm-clock\n"));
        assert!(!is_tsc_clocksource("hpet"));
        assert!(!is_tsc_clocksource(""));
    }

    #[test]
    fn where_usable_it_counts_up() {
        if usable() {
            let a = read();
            let b = read();
            assert!(b >= a, "{a} then {b}");
        }
    }
}
