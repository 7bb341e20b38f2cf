//! Hardening of the process that holds unsealed keys.

use std::io;

/// Makes the process non-dumpable and sets its core size limit to zero, so that a crash
/// (or `gcore`, or another process of the same user reading `/proc/PID/mem`) cannot copy
/// key material out of memory.
pub fn no_core_dumps() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE takes a plain integer argument and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `zero` is a valid rlimit that outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process is currently dumpable.
pub fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointers.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_becomes_undumpable_with_no_core_limit() {
        assert!(super::dumpable(), "test processes start dumpable");
        super::no_core_dumps().unwrap();
        assert!(!super::dumpable());
        let mut lim = libc::rlimit { rlim_cur: 1, rlim_max: 1 };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut lim) }, 0);
        assert_eq!((lim.rlim_cur, lim.rlim_max), (0, 0));
    }
}
