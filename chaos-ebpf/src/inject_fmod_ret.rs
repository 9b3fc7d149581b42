//! Engine `fmod-ret`: a `BPF_MODIFY_RETURN` program on a function the call goes through (the
//! syscall's `__x64_sys_*` where the kernel's error-injection list allows it, else the
//! `security_*` function behind the LSM hook) returns the errno instead of running it. Needs BTF
//! trampolines, not the BPF LSM. chaos-user loads this one program once per function
//! (`chaos-user/src/inject/fmod_ret.rs`): aya cannot load fmod_ret programs.
use core::ffi::c_void;

use chaos_common::ENGINE_FMOD_RET;

use crate::inject::take_pending;

/// In an `fexit` section, written out by hand: aya's `#[fexit]` macro would return 0 whatever
/// the function returns, and a non-zero return is what skips the call. fexit and fmod_ret share
/// the context layout (the traced function's arguments), and this program reads none of it.
#[unsafe(no_mangle)]
#[unsafe(link_section = "fexit")]
/// 64 bits: `__x64_sys_*` return a long, and a 32-bit -1 would reach the caller as 4294967295
/// (the `security_*` functions return an int, the low half).
pub fn inject_fmod_ret(_ctx: *mut c_void) -> i64 {
    match take_pending(ENGINE_FMOD_RET) {
        // 0 runs the function; a negative errno is returned in its place.
        Some(errno) if errno <= 4095 => -i64::from(errno),
        _ => 0,
    }
}
